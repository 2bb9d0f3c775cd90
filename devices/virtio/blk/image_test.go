package blk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An image's identity is its size and either its hash or the generation
// given; an image under a sector is refused.
func TestOpenImage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	os.WriteFile(path, make([]byte, 2*SectorSize), 0o644)
	img, err := OpenImage(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	// sha256 of 1024 zero bytes
	if img.Identity != "size=1024 sha256=5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef" {
		t.Errorf("identity %q", img.Identity)
	}
	gen, err := OpenImage(path, "7")
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	if gen.Identity != "size=1024 generation=7" {
		t.Errorf("with a generation: identity %q", gen.Identity)
	}
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, make([]byte, 100), 0o644)
	if _, err := OpenImage(small, ""); !errors.Is(err, ErrImageTooSmall) {
		t.Errorf("small: err = %v", err)
	}
	if _, err := OpenImage(filepath.Join(dir, "none"), ""); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "none") {
		t.Errorf("missing: err = %v", err)
	}
}
