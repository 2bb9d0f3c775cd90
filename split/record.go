package split

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"time"
)

// A claim record is a few lines of text, readable with cat:
//
//	ftkvm split claim v1
//	pair: vm1
//	generation: 3
//	owner: hostA
//	when: 2026-11-03T10:00:00.123456789Z
//	crc32c: 1a2b3c4d
//
// The CRC32C covers every byte before the "crc32c: " line. The parser is
// strict: lines in this order, nothing else, so garbage never parses.

const (
	recordMagic = "ftkvm split claim v1"
	// maxRecordBytes bounds what is read from a claim file; a real record
	// is far smaller (names are at most maxNameBytes).
	maxRecordBytes = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeRecord(r Record) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\npair: %s\ngeneration: %d\nowner: %s\nwhen: %s\n",
		recordMagic, r.Pair, r.Generation, r.Owner, r.When.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, "crc32c: %08x\n", crc32.Checksum(b.Bytes(), castagnoli))
	return b.Bytes()
}

// decodeRecord parses a claim record. Its errors say what is wrong, for a
// message that already names the file.
func decodeRecord(data []byte) (Record, error) {
	var r Record
	if len(data) == 0 {
		return r, fmt.Errorf("empty file")
	}
	if len(data) > maxRecordBytes {
		return r, fmt.Errorf("longer than %d bytes", maxRecordBytes)
	}
	if data[len(data)-1] != '\n' {
		return r, fmt.Errorf("no final newline (truncated?)")
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	if len(lines) != 6 || lines[0] != recordMagic {
		return r, fmt.Errorf("not a %q record", recordMagic)
	}
	field := func(i int, key string) (string, error) {
		v, ok := strings.CutPrefix(lines[i], key+": ")
		if !ok {
			return "", fmt.Errorf("line %d: want %q field", i+1, key)
		}
		return v, nil
	}
	sum, err := field(5, "crc32c")
	if err != nil {
		return r, err
	}
	covered := len(data) - len(lines[5]) - 1
	if want := fmt.Sprintf("%08x", crc32.Checksum(data[:covered], castagnoli)); sum != want {
		return r, fmt.Errorf("checksum %s, want %s", sum, want)
	}
	if r.Pair, err = field(1, "pair"); err != nil {
		return r, err
	}
	gen, err := field(2, "generation")
	if err != nil {
		return r, err
	}
	if r.Generation, err = strconv.ParseUint(gen, 10, 64); err != nil || strconv.FormatUint(r.Generation, 10) != gen {
		return r, fmt.Errorf("line 3: bad generation %q", gen)
	}
	if err := checkPair(r.Pair); err != nil {
		return r, fmt.Errorf("line 2: pair: %v", err)
	}
	if r.Owner, err = field(3, "owner"); err != nil {
		return r, err
	}
	if err := checkNode(r.Owner); err != nil {
		return r, fmt.Errorf("line 4: owner: %v", err)
	}
	when, err := field(4, "when")
	if err != nil {
		return r, err
	}
	if r.When, err = time.Parse(time.RFC3339Nano, when); err != nil || r.When.UTC().Format(time.RFC3339Nano) != when {
		return r, fmt.Errorf("line 5: bad time %q (want RFC 3339 in UTC)", when)
	}
	r.When = r.When.UTC()
	return r, nil
}
