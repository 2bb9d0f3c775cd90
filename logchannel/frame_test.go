package logchannel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func dataFrame(first uint64, entries ...[]byte) []byte {
	var payload []byte
	for _, e := range entries {
		payload = appendEntry(payload, e)
	}
	return appendFrame(nil, frameData, first, uint32(len(entries)), payload)
}

func TestFrameRoundTrip(t *testing.T) {
	f := dataFrame(7, []byte("a"), nil, bytes.Repeat([]byte("x"), 300))
	h, raw, n, err := decodeFrame(f, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(f) || h.typ != frameData || h.seq != 7 || h.count != 3 || h.lastSeq() != 9 {
		t.Fatalf("got %+v n=%d", h, n)
	}
	var got []string
	for d := raw; len(d) > 0; {
		var e []byte
		e, d = nextEntry(d)
		got = append(got, string(e))
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "" || len(got[2]) != 300 {
		t.Fatalf("entries %q", got)
	}
	for _, typ := range []frameType{frameAck, frameHeartbeat, frameClose} {
		f := appendFrame(nil, typ, 42, 0, nil)
		h, _, _, err := decodeFrame(f, 0, 0)
		if err != nil || h.typ != typ || h.seq != 42 {
			t.Fatalf("%v: %+v %v", typ, h, err)
		}
	}
}

// Every single-bit flip anywhere in a frame is caught: nothing corrupted
// is ever accepted.
func TestFrameEveryBitFlipDetected(t *testing.T) {
	f := dataFrame(1, []byte("hello"), []byte("world, a longer entry"))
	for i := 0; i < len(f)*8; i++ {
		g := bytes.Clone(f)
		g[i/8] ^= 1 << (i % 8)
		_, _, _, err := decodeFrame(g, 1<<20, 1<<20)
		if err == nil {
			t.Fatalf("bit %d flipped: accepted", i)
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("bit %d flipped: %v", i, err)
		}
	}
}

func TestFrameTruncated(t *testing.T) {
	f := dataFrame(1, []byte("hello"), []byte("world"))
	for n := 0; n < len(f); n++ {
		_, _, _, err := decodeFrame(f[:n], 1<<20, 1<<20)
		wantErr(t, err, ErrTruncated)
	}
}

func TestFrameVersion(t *testing.T) {
	f := appendFrame(nil, frameHello, 0, 0, make([]byte, helloLen))
	f[1] = ProtocolVersion + 1
	rehash(f)
	_, _, _, err := decodeFrame(f, 1<<20, 1<<20)
	wantErr(t, err, ErrVersion)
}

// rehash recomputes the header CRC after a test edited the header.
func rehash(f []byte) {
	c := crc32c(f[:28])
	f[28], f[29], f[30], f[31] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
}

func TestFrameBadHeaders(t *testing.T) {
	good := dataFrame(1, []byte("abc"))
	cases := map[string]func(f []byte){
		"magic":          func(f []byte) { f[0] = 0 },
		"unknown type":   func(f []byte) { f[2] = 99 },
		"unknown flags":  func(f []byte) { f[3] = 0x80 },
		"huge length":    func(f []byte) { f[7] = 0x7f },
		"zero count":     func(f []byte) { f[12] = 0 },
		"zero seq":       func(f []byte) { f[16] = 0 },
		"raw != wire":    func(f []byte) { f[8]++ },
		"count too high": func(f []byte) { f[12] = 2 },
	}
	for name, edit := range cases {
		f := bytes.Clone(good)
		edit(f)
		if name != "magic" {
			rehash(f)
		}
		_, _, _, err := decodeFrame(f, 1<<20, 1<<20)
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestCheckEntries(t *testing.T) {
	var p []byte
	p = appendEntry(p, []byte("abc"))
	p = appendEntry(p, []byte("de"))
	if err := checkEntries(p, 2, 10); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		raw      []byte
		count    uint32
		maxEntry int
	}{
		{p, 1, 10},            // trailing bytes
		{p, 3, 10},            // missing entry
		{p, 2, 2},             // entry over the limit
		{p[:len(p)-1], 2, 10}, // entry past the end
		{[]byte{0x80}, 1, 10}, // bad varint
	} {
		if err := checkEntries(c.raw, c.count, c.maxEntry); err == nil {
			t.Errorf("checkEntries(%x, %d, %d) accepted", c.raw, c.count, c.maxEntry)
		}
	}
}

func TestEncodedLen(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 1<<21 - 1, 1 << 21, 1<<28 - 1, 1 << 28} {
		if got, want := encodedLen(n), n+len(binary.AppendUvarint(nil, uint64(n))); got != want {
			t.Errorf("encodedLen(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestCompressedFrame(t *testing.T) {
	b := &sendBatch{first: 5, sealed: true}
	for i := 0; i < 100; i++ {
		b.data = appendEntry(b.data, bytes.Repeat([]byte{byte(i)}, 50))
		b.count++
	}
	b.crc = crc32c(b.data)
	a, c := NewPipe(1 << 20)
	fw := newFrameWriter(a, CompressS2)
	if err := fw.writeData([]*sendBatch{b}, 0, 0); err != nil {
		t.Fatal(err)
	}
	a.Close()
	fr := newFrameReader(c, 1<<20, 1<<20)
	h, raw, err := fr.read()
	if err != nil {
		t.Fatal(err)
	}
	if h.codec() != codecS2 || h.wireLen >= h.rawLen {
		t.Fatalf("frame not compressed: %+v", h)
	}
	if !bytes.Equal(raw, b.data) {
		t.Fatal("payload differs after decompression")
	}
}
