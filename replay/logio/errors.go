package logio

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. A damaged log yields a *FormatError whose Err is one of
// the first six; test with errors.Is.
var (
	// ErrBadMagic: the stream does not start with "FTKVMLOG"; it is not a log.
	ErrBadMagic = errors.New("not an ftkvm log (bad magic)")
	// ErrVersion: the log's format version is not FormatVersion.
	ErrVersion = errors.New("unsupported log format version")
	// ErrCorrupt: a record's CRC32C does not match, its payload does not
	// decode, or its length prefix is malformed.
	ErrCorrupt = errors.New("corrupt record")
	// ErrTruncated: the stream ends inside the file header or a record.
	ErrTruncated = errors.New("truncated log")
	// ErrSequence: an event's seq is not the previous seq + 1 (a record was
	// reordered, dropped or duplicated), its exits count went down, or it
	// follows the End event.
	ErrSequence = errors.New("event out of sequence")
	// ErrTooLarge: a record's length prefix exceeds MaxPayload, or its
	// payload would decode to more than MaxDecoded.
	ErrTooLarge = errors.New("record too large")

	// ErrConfigMismatch: CompareHeaders found the log was recorded on a VM
	// configured differently from the one about to replay it.
	ErrConfigMismatch = errors.New("log header does not match this VM")
)

// FormatError reports damage found while reading a log: where it is and
// what is wrong.
type FormatError struct {
	Offset int64  // byte offset of the damaged record (or of the file header field)
	Record int    // record number: 0 is the header, n is the n-th event; -1 before the header record
	Err    error  // one of ErrBadMagic, ErrVersion, ErrCorrupt, ErrTruncated, ErrSequence, ErrTooLarge
	Detail string // what exactly, e.g. "CRC32C 0x1234abcd != 0x9f00e1c2"
}

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("logio: ")
	switch e.Record {
	case -1:
		fmt.Fprintf(&b, "file header at byte %d: ", e.Offset)
	case 0:
		fmt.Fprintf(&b, "header record at byte %d: ", e.Offset)
	default:
		fmt.Fprintf(&b, "record %d at byte %d: ", e.Record, e.Offset)
	}
	b.WriteString(e.Err.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

func (e *FormatError) Unwrap() error { return e.Err }

// ConfigMismatchError lists every way a log's header differs from the
// running VM's. It matches ErrConfigMismatch under errors.Is.
type ConfigMismatchError struct {
	// Diffs holds one plain-words line per differing field, the log's value
	// first, e.g. "memory 128 MiB vs 64 MiB".
	Diffs []string
}

func (e *ConfigMismatchError) Error() string {
	return "log was recorded on a differently configured VM (log vs this VM): " + strings.Join(e.Diffs, "; ")
}

func (e *ConfigMismatchError) Unwrap() error { return ErrConfigMismatch }
