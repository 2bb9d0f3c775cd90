package logio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

var (
	headerDesc = (&logpb.Header{}).ProtoReflect().Descriptor()
	eventDesc  = (&logpb.Event{}).ProtoReflect().Descriptor()
)

// readChunk bounds how much the Reader allocates ahead of data actually
// read (besides doubling its buffer), so a length prefix that lies costs
// no more than twice the memory the stream really holds.
const readChunk = 1 << 20

// Reader reads a log written by Writer, verifying every record. It is not
// safe for concurrent use.
type Reader struct {
	br      *bufio.Reader
	off     int64 // bytes consumed
	header  *logpb.Header
	buf     []byte // payload buffer, reused (proto.Unmarshal copies out of it)
	seq     sequence
	records int   // records read and verified, the header included
	err     error // sticky: io.EOF or a *FormatError
}

// NewReader reads and checks the magic, the format version and the header
// record. Its errors are *FormatError (or a read error from r).
func NewReader(r io.Reader) (*Reader, error) {
	lr := &Reader{br: bufio.NewReaderSize(r, 64<<10)}
	var fh [fileHeaderSize]byte
	n, err := io.ReadFull(lr.br, fh[:])
	lr.off += int64(n)
	if n < len(Magic) && string(fh[:n]) != Magic[:n] || n >= len(Magic) && string(fh[:len(Magic)]) != Magic {
		return nil, &FormatError{Offset: 0, Record: -1, Err: ErrBadMagic,
			Detail: fmt.Sprintf("starts with %q", fh[:min(n, len(Magic))])}
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &FormatError{Offset: int64(n), Record: -1, Err: ErrTruncated,
				Detail: fmt.Sprintf("stream ends after %d of the %d bytes of magic and version", n, fileHeaderSize)}
		}
		return nil, fmt.Errorf("logio: reading file header: %w", err)
	}
	if v := binary.LittleEndian.Uint32(fh[len(Magic):]); v != FormatVersion {
		return nil, &FormatError{Offset: int64(len(Magic)), Record: -1, Err: ErrVersion,
			Detail: fmt.Sprintf("version %d, this reader knows %d", v, FormatVersion)}
	}
	start := lr.off
	payload, err := lr.readRecord()
	if err == io.EOF {
		err = &FormatError{Offset: start, Record: 0, Err: ErrTruncated, Detail: "no header record"}
	}
	if err != nil {
		return nil, err
	}
	if err := checkDecoded(payload, headerDesc); err != nil {
		return nil, &FormatError{Offset: start, Record: 0, Err: ErrTooLarge, Detail: err.Error()}
	}
	h := new(logpb.Header)
	if err := proto.Unmarshal(payload, h); err != nil {
		return nil, &FormatError{Offset: start, Record: 0, Err: ErrCorrupt, Detail: "header does not decode: " + err.Error()}
	}
	lr.header = h
	lr.records = 1
	return lr, nil
}

// Header returns the log's header.
func (r *Reader) Header() *logpb.Header { return r.header }

// Offset reports the byte offset of the next record: after a clean io.EOF,
// the size of the log.
func (r *Reader) Offset() int64 { return r.off }

// Records reports how many records have been read and verified, the header
// included; it is also the record number of the next one.
func (r *Reader) Records() int { return r.records }

// Next returns the next event. It returns io.EOF only at a clean record
// boundary; damage is a *FormatError naming the record and byte offset, as
// is a record that would decode to more than MaxDecoded (ErrTooLarge),
// refused before it is decoded.
// Once Next has returned an error it returns the same error again.
func (r *Reader) Next() (*logpb.Event, error) {
	if r.err != nil {
		return nil, r.err
	}
	start := r.off
	payload, err := r.readRecord()
	if err != nil {
		r.err = err
		return nil, err
	}
	fail := func(sentinel error, detail string) (*logpb.Event, error) {
		r.err = &FormatError{Offset: start, Record: r.records, Err: sentinel, Detail: detail}
		return nil, r.err
	}
	if err := checkDecoded(payload, eventDesc); err != nil {
		return fail(ErrTooLarge, err.Error())
	}
	ev := new(logpb.Event)
	if err := proto.Unmarshal(payload, ev); err != nil {
		return fail(ErrCorrupt, "event does not decode: "+err.Error())
	}
	if msg := r.seq.check(ev); msg != "" {
		return fail(ErrSequence, msg)
	}
	if err := validKind(ev); err != nil {
		return fail(ErrCorrupt, err.Error())
	}
	r.seq.advance(ev)
	r.records++
	return ev, nil
}

// readRecord reads and checks the framing of the record at r.off and
// returns its payload, valid until the next call. At a clean end of stream
// it returns io.EOF.
func (r *Reader) readRecord() ([]byte, error) {
	start := r.off
	fail := func(sentinel error, format string, a ...any) ([]byte, error) {
		return nil, &FormatError{Offset: start, Record: r.records, Err: sentinel, Detail: fmt.Sprintf(format, a...)}
	}
	truncated := func(what string, err error) ([]byte, error) {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(ErrTruncated, "stream ends at byte %d, inside the %s", r.off, what)
		}
		return nil, fmt.Errorf("logio: reading record %d at byte %d: %w", r.records, start, err)
	}

	// Length prefix, byte by byte so that a clean EOF is told apart from a
	// cut inside the prefix.
	var length uint64
	for i := 0; ; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			if i == 0 && err == io.EOF {
				return nil, io.EOF
			}
			return truncated("length prefix", err)
		}
		r.off++
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return fail(ErrCorrupt, "length prefix overflows 64 bits")
		}
		length |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return fail(ErrCorrupt, "length prefix is not minimally encoded")
			}
			break
		}
	}
	if length > MaxPayload {
		return fail(ErrTooLarge, "length prefix says %d bytes, the limit is %d", length, MaxPayload)
	}

	// Payload, growing the buffer only as data arrives, by doubling so
	// that reading n bytes allocates less than 2n in all.
	n := int(length)
	r.buf = r.buf[:0]
	for len(r.buf) < n {
		chunk := min(n-len(r.buf), readChunk)
		if cap(r.buf)-len(r.buf) < chunk {
			r.buf = slices.Grow(r.buf, min(n, max(2*cap(r.buf), len(r.buf)+chunk))-len(r.buf))
		}
		got, err := io.ReadFull(r.br, r.buf[len(r.buf):len(r.buf)+chunk])
		r.buf = r.buf[:len(r.buf)+got]
		r.off += int64(got)
		if err != nil {
			return truncated(fmt.Sprintf("%d-byte payload", n), err)
		}
	}

	var sum [4]byte
	got, err := io.ReadFull(r.br, sum[:])
	r.off += int64(got)
	if err != nil {
		return truncated("CRC32C", err)
	}
	want := binary.LittleEndian.Uint32(sum[:])
	if have := crcOf(r.buf); have != want {
		return fail(ErrCorrupt, "CRC32C 0x%08x of the payload != 0x%08x stored", have, want)
	}
	return r.buf, nil
}
