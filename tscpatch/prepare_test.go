package tscpatch

import (
	"bytes"
	"testing"
)

func TestPrepareFlatPatchesAndBuildsTheTable(t *testing.T) {
	const base = 0x100000
	image := []byte{0x0f, 0x31, 0x90, 0x0f, 0x01, 0xf9, 0xf4} // rdtsc; nop; rdtscp; hlt
	orig := append([]byte(nil), image...)
	p, err := PrepareFlat(image, base)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(image, orig) {
		t.Errorf("PrepareFlat modified its input: % x", image)
	}
	want := []byte{0xe6, DefaultRDTSCPort, 0x90, 0xe6, DefaultRDTSCPPort, 0x90, 0xf4}
	if !bytes.Equal(p.Image, want) {
		t.Errorf("patched image % x, want % x", p.Image, want)
	}
	if len(p.Sites) != 2 || p.Table == nil || p.Table.Len() != 2 {
		t.Fatalf("sites %v, table %v: want 2 sites in the table", p.Sites, p.Table)
	}
	if s, err := p.Table.Check(DefaultRDTSCPPort, true, 1, base+3); err != nil || s.Kind != RDTSCP {
		t.Errorf("Check(rdtscp site) = %v, %v", s, err)
	}
}

func TestPrepareWithoutSitesLeavesTheImage(t *testing.T) {
	image := []byte{0x90, 0xf4}
	p, err := PrepareFlat(image, 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	if &p.Image[0] != &image[0] || p.Table != nil || len(p.Sites) != 0 {
		t.Errorf("no-site image: got %+v", p)
	}
}

func TestPrepareELFRefusesANonELF(t *testing.T) {
	if _, err := PrepareELF([]byte("not an ELF")); err == nil {
		t.Error("PrepareELF accepted garbage")
	}
}
