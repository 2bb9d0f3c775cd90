package tscpatch

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

func TestPatchRoundTrip(t *testing.T) {
	image := assemble(t, synthetic, kernelLike)
	orig := bytes.Clone(image)
	sites, err := Scan(image)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := Patch(image, sites, DefaultRDTSCPort, DefaultRDTSCPPort)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(image, orig) {
		t.Error("Patch modified its input")
	}
	for _, s := range sites {
		at := patched[s.FileOffset : s.FileOffset+int64(s.Len)]
		want := []byte{0xe6, DefaultRDTSCPort}
		if s.Kind == RDTSCP {
			want = []byte{0xe6, DefaultRDTSCPPort, 0x90}
		}
		if !bytes.Equal(at, want) {
			t.Errorf("%v patched to % x, want % x", s, at, want)
		}
		inst, err := x86asm.Decode(at, 64)
		if err != nil || inst.Op != x86asm.OUT {
			t.Errorf("%v: patched bytes decode as %v, %v", s, inst, err)
		}
	}
	// Only the sites changed.
	diff := 0
	for i := range image {
		if image[i] != patched[i] {
			diff++
		}
	}
	if want := 2*countKind(sites, RDTSC) + 3*countKind(sites, RDTSCP); diff != want {
		t.Errorf("%d bytes changed, want %d", diff, want)
	}
	// The patched image still parses and has no sites left.
	again, err := Scan(patched)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Errorf("patched image still has sites %v", again)
	}
	// Patching twice is refused rather than silently doing nothing.
	if _, err := Patch(patched, sites, DefaultRDTSCPort, DefaultRDTSCPPort); !errors.Is(err, ErrSiteMismatch) {
		t.Errorf("second patch: err = %v, want ErrSiteMismatch", err)
	}
}

func countKind(sites []Site, k Kind) int {
	n := 0
	for _, s := range sites {
		if s.Kind == k {
			n++
		}
	}
	return n
}

func TestPatchRefuses(t *testing.T) {
	image := assemble(t, synthetic, kernelLike)
	sites, err := Scan(image)
	if err != nil {
		t.Fatal(err)
	}
	first := sites[0]

	changed := bytes.Clone(image)
	changed[first.FileOffset+1] = 0x90 // 0f 90: seto, no longer rdtsc
	if _, err := Patch(changed, sites, DefaultRDTSCPort, DefaultRDTSCPPort); !errors.Is(err, ErrSiteMismatch) {
		t.Errorf("changed bytes: err = %v, want ErrSiteMismatch", err)
	}

	wrongKind := first
	wrongKind.Kind = RDTSCP
	wrongKind.Len = 3
	wrongLen := first
	wrongLen.Len = 3
	shifted := first
	shifted.FileOffset++
	cases := map[string][]Site{
		"wrong kind":     {wrongKind},
		"wrong length":   {wrongLen},
		"shifted offset": {shifted},
		"listed twice":   {first, first},
		"outside image":  {{Kind: RDTSC, Len: 2, FileOffset: int64(len(image)) - 1}},
		"negative":       {{Kind: RDTSC, Len: 2, FileOffset: -1}},
		"no kind":        {{Len: 2, FileOffset: first.FileOffset}},
	}
	for name, list := range cases {
		if out, err := Patch(image, list, DefaultRDTSCPort, DefaultRDTSCPPort); err == nil {
			t.Errorf("%s: patched (% x)", name, out[first.FileOffset:first.FileOffset+3])
		}
	}
}

// Equal ports are allowed by Patch; the kinds then differ only in the
// trailing nop.
func TestPatchOnePort(t *testing.T) {
	image := []byte{0x0f, 0x31, 0x0f, 0x01, 0xf9, 0xc3}
	sites, err := ScanFlat(image, 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Patch(image, sites, 0xE3, 0xE3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0xe6, 0xe3, 0xe6, 0xe3, 0x90, 0xc3}; !bytes.Equal(out, want) {
		t.Errorf("patched % x, want % x", out, want)
	}
}
