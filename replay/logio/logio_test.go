package logio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

func TestRoundTrip(t *testing.T) {
	h := testHeader()
	want := testEvents(400)
	log := writeLog(t, h, want)

	r, got, err := readAll(log.data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(r.Header(), h) {
		t.Errorf("header = %v, want %v", r.Header(), h)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d events, wrote %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("event %d = %v, want %v", i+1, got[i], want[i])
		}
	}
	if r.Offset() != int64(len(log.data)) {
		t.Errorf("Offset() = %d at EOF, log is %d bytes", r.Offset(), len(log.data))
	}
	if r.Records() != len(want)+1 {
		t.Errorf("Records() = %d, want %d", r.Records(), len(want)+1)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after EOF = %v, want io.EOF again", err)
	}
}

func TestEmptyLog(t *testing.T) {
	log := writeLog(t, &logpb.Header{}, nil)
	r, evs, err := readAll(log.data)
	if err != nil || len(evs) != 0 {
		t.Fatalf("got %d events, err %v; want none, nil", len(evs), err)
	}
	if !proto.Equal(r.Header(), &logpb.Header{}) {
		t.Errorf("header = %v", r.Header())
	}
}

// damage returns a copy of data with the byte at off inverted.
func damage(data []byte, off int) []byte {
	d := bytes.Clone(data)
	d[off] ^= 0xff
	return d
}

// wantFormatError checks that err is a *FormatError for sentinel at record
// and offset.
func wantFormatError(t *testing.T, err error, sentinel error, record int, offset int) {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want a *FormatError", err, err)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("err = %v, want %v", err, sentinel)
	}
	if fe.Record != record || fe.Offset != int64(offset) {
		t.Errorf("err at record %d byte %d, want record %d byte %d (%v)", fe.Record, fe.Offset, record, offset, err)
	}
}

func TestFlippedPayloadByte(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(40))
	for _, rec := range []int{1, 2, 17, 33, 40} {
		// The payload starts after a one-byte length prefix (these records are
		// under 128 bytes) and ends before the CRC; hit its first and last byte.
		start, end := log.starts[rec], log.starts[rec+1]
		if log.data[start] >= 0x80 {
			t.Fatalf("record %d has a multi-byte length prefix; adjust the test", rec)
		}
		for _, off := range []int{start + 1, end - 5} {
			_, evs, err := readAll(damage(log.data, off))
			wantFormatError(t, err, ErrCorrupt, rec, start)
			if len(evs) != rec-1 {
				t.Errorf("byte %d flipped: read %d good events before the damage, want %d", off, len(evs), rec-1)
			}
			if !strings.Contains(err.Error(), "CRC32C") {
				t.Errorf("message %q does not mention the CRC", err)
			}
		}
	}
}

func TestFlippedCRCByte(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(20))
	for rec := 1; rec <= 20; rec++ {
		end := log.starts[rec+1]
		for off := end - 4; off < end; off++ {
			_, _, err := readAll(damage(log.data, off))
			wantFormatError(t, err, ErrCorrupt, rec, log.starts[rec])
		}
	}
}

func TestFlippedHeaderByte(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(8))
	_, _, err := readAll(damage(log.data, log.starts[0]+5))
	wantFormatError(t, err, ErrCorrupt, 0, log.starts[0])
}

func TestErrorMessage(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(20))
	_, _, err := readAll(damage(log.data, log.starts[17]+3))
	want := fmt.Sprintf("logio: record 17 at byte %d: corrupt record: CRC32C 0x", log.starts[17])
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "!= 0x") {
		t.Errorf("message = %q, want it to start %q and compare two CRCs", err, want)
	}
}

// TestTruncation cuts a log at every byte offset: reading must end in
// io.EOF exactly at record boundaries, after exactly the records before
// the cut, and in ErrTruncated everywhere else.
func TestTruncation(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(12))
	boundary := map[int]int{} // offset → events before it
	for i := 1; i < len(log.starts); i++ {
		boundary[log.starts[i]] = i - 1
	}
	for cut := 0; cut <= len(log.data); cut++ {
		r, evs, err := readAll(log.data[:cut])
		n, atBoundary := boundary[cut]
		switch {
		case atBoundary:
			if err != nil {
				t.Errorf("cut at record boundary %d: %v, want a clean end", cut, err)
			} else if len(evs) != n || r.Offset() != int64(cut) {
				t.Errorf("cut at %d: read %d events to byte %d, want %d events", cut, len(evs), r.Offset(), n)
			}
		case err == nil:
			t.Errorf("cut at %d: read %d events and no error; the cut went unnoticed", cut, len(evs))
		case !errors.Is(err, ErrTruncated):
			t.Errorf("cut at %d: %v, want ErrTruncated", cut, err)
		}
	}
}

func TestSwappedRecords(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(20))
	var d []byte
	d = append(d, log.data[:log.starts[5]]...)
	d = append(d, log.record(6)...)
	d = append(d, log.record(5)...)
	d = append(d, log.data[log.starts[7]:]...)
	_, evs, err := readAll(d)
	wantFormatError(t, err, ErrSequence, 5, log.starts[5])
	if len(evs) != 4 {
		t.Errorf("read %d events before the swap, want 4", len(evs))
	}
}

func TestDroppedRecord(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(20))
	d := append(bytes.Clone(log.data[:log.starts[9]]), log.data[log.starts[10]:]...)
	_, _, err := readAll(d)
	wantFormatError(t, err, ErrSequence, 9, log.starts[9])
	if !strings.Contains(err.Error(), "seq 10 where 9 was expected") {
		t.Errorf("message = %q", err)
	}
}

func TestDuplicatedRecord(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(20))
	d := append(bytes.Clone(log.data[:log.starts[10]]), log.data[log.starts[9]:]...)
	_, _, err := readAll(d)
	wantFormatError(t, err, ErrSequence, 10, log.starts[10])
}

// TestSequenceRules writes, byte for byte as Writer would, events that
// Writer refuses, and checks that the Reader refuses them too.
func TestSequenceRules(t *testing.T) {
	clock := func(seq, exits uint64) *logpb.Event {
		return &logpb.Event{Seq: seq, Exits: exits, Kind: &logpb.Event_Clock{Clock: 1}}
	}
	end := &logpb.Event{Seq: 2, Exits: 5, Kind: &logpb.Event_End{End: &logpb.End{}}}
	for _, tc := range []struct {
		name     string
		evs      []*logpb.Event
		sentinel error
		msg      string
	}{
		{"first seq is not 1", []*logpb.Event{clock(2, 0)}, ErrSequence, "seq 2 where 1 was expected"},
		{"seq 0", []*logpb.Event{clock(0, 0)}, ErrSequence, "seq 0 where 1 was expected"},
		{"exits go down", []*logpb.Event{clock(1, 9), clock(2, 8)}, ErrSequence, "exits went down from 9 to 8"},
		{"event after End", []*logpb.Event{clock(1, 0), end, clock(3, 5)}, ErrSequence, "after the End event"},
		{"no kind", []*logpb.Event{{Seq: 1}}, ErrCorrupt, "has no kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, testHeader())
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range tc.evs {
				payload, err := proto.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				w.write(binary.AppendUvarint(nil, uint64(len(payload))))
				w.write(payload)
				w.write(binary.LittleEndian.AppendUint32(nil, crcOf(payload)))
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			_, _, err = readAll(buf.Bytes())
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("reader: %v, want %v mentioning %q", err, tc.sentinel, tc.msg)
			}

			// Writer.Append refuses the same stream at the same event.
			w2, err := NewWriter(io.Discard, testHeader())
			if err != nil {
				t.Fatal(err)
			}
			var appendErr error
			for _, ev := range tc.evs {
				if appendErr = w2.Append(ev); appendErr != nil {
					break
				}
			}
			if appendErr == nil || !strings.Contains(appendErr.Error(), tc.msg) {
				t.Errorf("writer: %v, want an error mentioning %q", appendErr, tc.msg)
			}
		})
	}
}

func TestWriterRejectsBadSequence(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	evs := testEvents(10)
	for _, ev := range evs[:3] {
		if err := w.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	before := w.Bytes()
	for _, bad := range []*logpb.Event{evs[4], evs[2], evs[0]} { // gap, duplicate, restart
		if err := w.Append(bad); !errors.Is(err, ErrSequence) {
			t.Errorf("Append(seq %d) after seq 3 = %v, want ErrSequence", bad.Seq, err)
		}
	}
	if w.Bytes() != before {
		t.Errorf("a refused Append wrote %d bytes", w.Bytes()-before)
	}
	// A refusal does not spoil the Writer: the right event still goes in, and
	// the log reads back whole.
	for _, ev := range evs[3:] {
		if err := w.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, got, err := readAll(buf.Bytes()); err != nil || len(got) != len(evs) {
		t.Errorf("read back %d events, err %v; want %d, nil", len(got), err, len(evs))
	}
}

func TestWriterTooLarge(t *testing.T) {
	w, err := NewWriter(io.Discard, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	before := w.Bytes()
	big := &logpb.Event{Seq: 1, Kind: &logpb.Event_Read{Read: &logpb.Read{Data: make([]byte, MaxPayload)}}}
	if err := w.Append(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append(%d-byte payload) = %v, want ErrTooLarge", MaxPayload, err)
	}
	if w.Bytes() != before {
		t.Errorf("the refused event left %d bytes", w.Bytes()-before)
	}
}

type failingWriter struct{ closed bool }

func (f *failingWriter) Write(p []byte) (int, error) { return 0, errors.New("disk full") }
func (f *failingWriter) Close() error                { f.closed = true; return nil }

func TestWriterErrorsAreSticky(t *testing.T) {
	fw := new(failingWriter)
	w, err := NewWriter(fw, testHeader())
	if err != nil {
		t.Fatal(err) // buffered: nothing reached fw yet
	}
	if err := w.Flush(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Flush = %v, want the write error", err)
	}
	if err := w.Append(testEvents(8)[0]); err == nil {
		t.Error("Append after a failed flush succeeded")
	}
	if err := w.Close(); err == nil {
		t.Error("Close after a failed flush succeeded")
	}
	if !fw.closed {
		t.Error("Close did not close the underlying writer")
	}
	if err := w.Append(testEvents(8)[0]); err == nil {
		t.Error("Append after Close succeeded")
	}
}

func TestNotALog(t *testing.T) {
	rnd := make([]byte, 200)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(rng.Uint32())
	}
	elf := []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00")
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"ELF header", elf, ErrBadMagic},
		{"random bytes", rnd, ErrBadMagic},
		{"text", []byte("hello, world\n"), ErrBadMagic},
		{"short non-magic", []byte("FTX"), ErrBadMagic},
		{"magic prefix", []byte("FTKV"), ErrTruncated},
		{"magic only", []byte(Magic), ErrTruncated},
		{"magic and version, no header", append([]byte(Magic), 1, 0, 0, 0), ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tc.data))
			if r != nil || !errors.Is(err, tc.want) {
				t.Errorf("NewReader = %v, %v; want nil, %v", r, err, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(8))
	d := bytes.Clone(log.data)
	binary.LittleEndian.PutUint32(d[len(Magic):], 99)
	_, err := NewReader(bytes.NewReader(d))
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("NewReader = %v, want ErrVersion naming version 99", err)
	}
}

// allocated runs f and reports the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHugeLengthPrefix(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(8))
	for _, tc := range []struct {
		name   string
		length uint64
		want   error
	}{
		{"1 GiB", 1 << 30, ErrTooLarge},
		{"2^64-1", 1<<64 - 1, ErrTooLarge},
		{"MaxPayload+1", MaxPayload + 1, ErrTooLarge},
		// Allowed, but the stream holds a few bytes: the Reader must not
		// allocate 60 MiB on the prefix's word.
		{"60 MiB claimed, 100 bytes present", 60 << 20, ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := bytes.Clone(log.data[:log.starts[3]])
			d = binary.AppendUvarint(d, tc.length)
			d = append(d, make([]byte, 100)...)
			var err error
			n := allocated(func() { _, _, err = readAll(d) })
			wantFormatError(t, err, tc.want, 3, log.starts[3])
			if n > 4<<20 {
				t.Errorf("reading allocated %d bytes", n)
			}
		})
	}
}

func TestMalformedLengthPrefix(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(8))
	for _, tc := range []struct {
		name   string
		prefix []byte
	}{
		{"overlong varint", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}},
		{"non-minimal zero", []byte{0x80, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := append(bytes.Clone(log.data[:log.starts[2]]), tc.prefix...)
			d = append(d, make([]byte, 16)...)
			_, _, err := readAll(d)
			wantFormatError(t, err, ErrCorrupt, 2, log.starts[2])
		})
	}
}

func TestGarbagePayloadWithGoodCRC(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(8))
	payload := []byte{0xff, 0xff, 0xff} // not a protobuf message
	d := bytes.Clone(log.data[:log.starts[4]])
	d = binary.AppendUvarint(d, uint64(len(payload)))
	d = append(d, payload...)
	d = binary.LittleEndian.AppendUint32(d, crcOf(payload))
	_, _, err := readAll(d)
	wantFormatError(t, err, ErrCorrupt, 4, log.starts[4])
}

func TestReaderReadError(t *testing.T) {
	log := writeLog(t, testHeader(), testEvents(8))
	boom := errors.New("EIO")
	r, err := NewReader(io.MultiReader(bytes.NewReader(log.data[:log.starts[3]+2]), errReader{boom}))
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err = r.Next()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, boom) {
		t.Errorf("Next = %v, want the read error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
