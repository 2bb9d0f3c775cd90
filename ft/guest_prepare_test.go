package ft

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/vmm"
)

// BareGuest patches the image's rdtsc into a trapping site and sizes the
// VM; the options reach the Guest.
func TestBareGuest(t *testing.T) {
	image := []byte{0x0f, 0x31, 0xf4} // rdtsc; hlt
	g, err := BareGuest(image)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Bare || g.Spec.MemoryBytes != replay.DefaultBareMemory || g.Spec.TSCSites == nil || g.Load == nil || g.Header == nil {
		t.Errorf("BareGuest = %+v", g)
	}
	if image[0] != 0x0f || image[1] != 0x31 {
		t.Errorf("the caller's image was patched: % x", image)
	}
	var trace strings.Builder
	g, err = BareGuest(image, WithMemory(32<<20), WithOptions(vmm.Options{ExitTrace: &trace}))
	if err != nil {
		t.Fatal(err)
	}
	if g.Spec.MemoryBytes != 32<<20 || g.Options.ExitTrace != &trace {
		t.Errorf("with options: %+v", g)
	}
}

// LinuxGuest names the file it could not use.
func TestLinuxGuestErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LinuxGuest(filepath.Join(dir, "none"), "", ""); err == nil || !strings.Contains(err.Error(), "reading kernel") {
		t.Errorf("missing kernel: err = %v", err)
	}
	notELF := filepath.Join(dir, "vmlinux")
	os.WriteFile(notELF, []byte("not an ELF file at all"), 0o644)
	if _, err := LinuxGuest(notELF, "", ""); err == nil || !strings.Contains(err.Error(), notELF) {
		t.Errorf("not ELF: err = %v", err)
	}
	if _, err := LinuxGuest(notELF, filepath.Join(dir, "none.cpio"), ""); err == nil || !strings.Contains(err.Error(), "reading initrd") {
		t.Errorf("missing initrd: err = %v", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 3<<20), 0o644)
	if _, err := LinuxGuest(big, "", "", WithMemory(2<<20)); err == nil {
		t.Error("a kernel larger than the guest's memory was read")
	}
}
