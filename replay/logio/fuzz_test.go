package logio

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// FuzzReader feeds arbitrary bytes to the Reader: it must not panic, must
// fail only with a *FormatError carrying one of the sentinels (the input
// cannot cause a read error), and whatever it accepts whole the Writer
// must write again to a log that reads back the same.
// Seeds beyond these are in testdata/fuzz/FuzzReader.
func FuzzReader(f *testing.F) {
	full := writeLog(f, testHeader(), testEvents(16))
	f.Add(full.data)
	f.Add(writeLog(f, &logpb.Header{}, nil).data)
	f.Add(full.data[:full.starts[5]+3])
	f.Add(damage(full.data, full.starts[7]+1))

	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			checkFormatError(t, err, len(data))
			return
		}
		var evs []*logpb.Event
		for {
			ev, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				checkFormatError(t, err, len(data))
				if r.Offset() > int64(len(data)) {
					t.Fatalf("Offset %d beyond the %d-byte input", r.Offset(), len(data))
				}
				return
			}
			evs = append(evs, ev)
		}
		if r.Offset() != int64(len(data)) {
			t.Fatalf("clean EOF at offset %d of a %d-byte input", r.Offset(), len(data))
		}
		if r.Records() != len(evs)+1 {
			t.Fatalf("Records() = %d after %d events", r.Records(), len(evs))
		}

		// What the Reader accepts, the Writer accepts and round-trips.
		var buf bytes.Buffer
		w, err := NewWriter(&buf, r.Header())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if err := w.Append(ev); err != nil {
				t.Fatalf("Writer refuses an event the Reader accepted: %v", err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r2, evs2, err := readAll(buf.Bytes())
		if err != nil {
			t.Fatalf("rewritten log does not read: %v", err)
		}
		if !proto.Equal(r2.Header(), r.Header()) || len(evs2) != len(evs) {
			t.Fatal("rewritten log differs")
		}
		for i := range evs {
			if !proto.Equal(evs[i], evs2[i]) {
				t.Fatalf("rewritten event %d differs: %v vs %v", i+1, evs2[i], evs[i])
			}
		}
	})
}

func checkFormatError(t *testing.T, err error, size int) {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FormatError", err, err)
	}
	known := false
	for _, s := range []error{ErrBadMagic, ErrVersion, ErrCorrupt, ErrTruncated, ErrSequence, ErrTooLarge} {
		known = known || fe.Err == s
	}
	if !known {
		t.Fatalf("error %v wraps an unknown sentinel", err)
	}
	if fe.Offset < 0 || fe.Offset > int64(size) {
		t.Fatalf("error offset %d outside the %d-byte input: %v", fe.Offset, size, err)
	}
	_ = err.Error()
}
