package logchannel

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame decoder, as a peer
// could. It must never panic or over-allocate; it either rejects the input
// with one of the decoder's errors or returns frames that re-encode to the
// same bytes, and the streaming reader must agree with the pure decoder.
// Seeds live in testdata/fuzz/FuzzDecodeFrame (regenerate with
// LOGCHANNEL_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds).
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	const maxPayload, maxEntry = 1 << 16, 1 << 12
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := NewPipe(len(b) + 1)
		a.Write(b)
		a.Close()
		fr := newFrameReader(c, maxPayload, maxEntry)
		for len(b) > 0 {
			h, raw, n, err := decodeFrame(b, maxPayload, maxEntry)
			sh, sraw, serr := fr.read()
			if (err == nil) != (serr == nil) {
				t.Fatalf("decodeFrame: %v, frameReader: %v", err, serr)
			}
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrVersion) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if sh != h || !bytes.Equal(sraw, raw) {
				t.Fatalf("frameReader got %+v, decodeFrame %+v", sh, h)
			}
			if n < headerLen || n > len(b) || len(raw) != int(h.rawLen) {
				t.Fatalf("n %d of %d, raw %d, header %+v", n, len(b), len(raw), h)
			}
			switch h.typ {
			case frameData:
				d := raw
				for i := uint32(0); i < h.count; i++ {
					var e []byte
					e, d = nextEntry(d)
					if len(e) > maxEntry {
						t.Fatalf("entry of %d bytes passed", len(e))
					}
				}
				if len(d) != 0 {
					t.Fatal("bytes left after the entries")
				}
				if h.codec() == codecNone {
					if re := appendFrame(nil, frameData, h.seq, h.count, raw); !bytes.Equal(re, b[:n]) {
						t.Fatal("data frame does not re-encode to the same bytes")
					}
				}
			case frameHello:
				decodeHello(raw)
			case frameWelcome:
				decodeWelcome(raw)
			case frameReject:
				decodeReject(raw)
			default:
				if re := appendFrame(nil, h.typ, h.seq, 0, nil); !bytes.Equal(re, b[:n]) {
					t.Fatalf("%v frame does not re-encode to the same bytes", h.typ)
				}
			}
			b = b[n:]
		}
	})
}

func fuzzSeeds() [][]byte {
	big := bytes.Repeat([]byte("landmark rip=ffffffff81000000 "), 40)
	compressed := func() []byte {
		b := &sendBatch{first: 9, sealed: true}
		for i := 0; i < 4; i++ {
			b.data = appendEntry(b.data, big)
			b.count++
		}
		b.crc = crc32c(b.data)
		a, c := NewPipe(1 << 20)
		newFrameWriter(a, CompressS2).writeData([]*sendBatch{b}, frameHeartbeat, 12)
		a.Close()
		var out bytes.Buffer
		out.ReadFrom(c)
		return out.Bytes()
	}()
	h := hello{configHash: testHash, streamID: 1, firstRetained: 1, maxFrame: 1 << 16, heartbeatUS: 100000}
	w := welcome{received: 3, acked: 2, heartbeatUS: 100000}
	corrupt := dataFrame(1, []byte("abc"))
	corrupt[headerLen+1] ^= 4
	two := append(dataFrame(1, []byte("a"), []byte("bc")), dataFrame(3, nil, []byte("d"))...)
	return [][]byte{
		dataFrame(1, []byte("a 32-byte entry of the replay log")),
		two,
		compressed,
		appendFrame(nil, frameAck, 5, 0, nil),
		appendFrame(nil, frameHeartbeat, 5, 0, nil),
		appendFrame(nil, frameClose, 5, 0, nil),
		appendFrame(nil, frameHello, 0, 0, h.encode()),
		appendFrame(nil, frameWelcome, 0, 0, w.encode()),
		appendFrame(nil, frameReject, 0, 0, encodeReject(rejectConfig, "VM config hash differs")),
		dataFrame(1, []byte("truncated"))[:headerLen+4],
		corrupt,
	}
}

// TestWriteFuzzSeeds writes the seeds in Go's corpus format.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("LOGCHANNEL_WRITE_SEEDS") == "" {
		t.Skip("set LOGCHANNEL_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzDecodeFrame")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"data", "two-data", "compressed", "ack", "heartbeat", "close", "hello", "welcome", "reject", "truncated", "corrupt"}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, "seed-"+names[i]), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
