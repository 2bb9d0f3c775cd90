package mpack

import (
	"errors"
	"testing"
)

type sample struct {
	A uint32
	B []byte
	C []struct{ X, Y int64 }
	D map[string]bool
	E string
	F float64
}

func TestRoundTripAndRefusals(t *testing.T) {
	in := sample{A: 7, B: []byte("bytes"), C: []struct{ X, Y int64 }{{1, -2}, {1 << 40, -1 << 40}}, D: map[string]bool{"k": true}, E: "s", F: 1.5}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out sample
	if err := Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.A != 7 || string(out.B) != "bytes" || len(out.C) != 2 || out.C[1].Y != -1<<40 || !out.D["k"] || out.E != "s" || out.F != 1.5 {
		t.Fatalf("round trip: %+v", out)
	}
	for i := range b { // every strict prefix is truncated
		if err := Check(b[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
	for name, bad := range map[string][]byte{
		"array32 of 2^32-1":   {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0},
		"bin32 past the end":  {0xc6, 0x00, 0x10, 0x00, 0x00, 1, 2, 3},
		"trailing bytes":      {0xc0, 0xc0},
		"reserved type 0xc1":  {0xc1},
		"map16 of 100 pairs":  {0xde, 0x00, 0x64, 1, 2},
		"nested beyond depth": append(repeat(0x91, MaxDepth+2), 0xc0),
	} {
		if err := Check(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want malformed", name, err)
		}
	}
	if err := Check(append(repeat(0x91, MaxDepth), 0xc0)); err != nil {
		t.Errorf("nesting of %d refused: %v", MaxDepth, err)
	}
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func FuzzCheck(f *testing.F) {
	b, _ := Marshal(sample{B: []byte{1}, C: make([]struct{ X, Y int64 }, 3)})
	f.Add(b)
	f.Add([]byte{0xdd, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		if Check(b) != nil {
			return
		}
		var s sample
		_ = Unmarshal(b, &s) // must not panic
		var v any
		_ = Unmarshal(b, &v)
	})
}
