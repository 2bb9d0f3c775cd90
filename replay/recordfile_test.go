package replay

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
	"google.golang.org/protobuf/proto"
)

// A FileConfig that sets what RecordFile supplies is refused before any
// VM exists, and leaves no file behind.
func TestRecordFileRefusesOwnedOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.log")
	g := &PreparedGuest{Guest: Guest{Bare: true}, MemoryBytes: DefaultBareMemory}
	for name, o := range map[string]vmm.Options{
		"console": {Console: os.Stderr},
		"input":   {ConsoleInput: os.Stdin},
		"driver":  {Driver: vmm.NewLiveDriver(nil)},
	} {
		_, err := RecordFile(context.Background(), path, g, FileConfig{Options: o})
		if !errors.Is(err, vmm.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
		for _, p := range []string{path, path + ".partial"} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s is left behind (%v)", name, p, err)
			}
		}
	}
}

// ReplayFile reads the header before it builds a VM: a file that is no
// log, or one of another landmark strategy, fails with the file's name.
func TestReplayFileChecksTheLog(t *testing.T) {
	dir := t.TempDir()
	g := &PreparedGuest{Guest: Guest{Bare: true}, MemoryBytes: DefaultBareMemory}
	junk := filepath.Join(dir, "junk.log")
	os.WriteFile(junk, []byte("not a log"), 0o644)
	if _, err := ReplayFile(context.Background(), junk, g, FileConfig{}); err == nil || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk: err = %v", err)
	}
	other := filepath.Join(dir, "other.log")
	f, _ := os.Create(other)
	w, err := logio.NewWriter(f, &logpb.Header{Version: logio.FormatVersion, Landmarks: "single-step"})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := ReplayFile(context.Background(), other, g, FileConfig{}); err == nil || !strings.Contains(err.Error(), `strategy "single-step"`) {
		t.Errorf("other strategy: err = %v", err)
	}
	if _, err := ReplayFile(context.Background(), filepath.Join(dir, "none.log"), g, FileConfig{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: err = %v", err)
	}
}

// PrepareBare patches the rdtsc of a copy of the image; the header pins
// the patched image and the site count; Spec carries memory, sites and
// epoch. PrepareLinux refuses what is no vmlinux.
func TestPrepareGuest(t *testing.T) {
	image := []byte{0x0f, 0x31, 0xf4} // rdtsc; hlt
	g, err := PrepareBare(image)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Bare || g.RDTSCSites != 1 || g.Sites == nil || g.MemoryBytes != DefaultBareMemory || bytes.Equal(g.Kernel, image) || image[0] != 0x0f {
		t.Errorf("PrepareBare: %+v (image % x)", g, image)
	}
	epoch := time.Unix(1_700_000_000, 0)
	if s := g.Spec(epoch); s.MemoryBytes != DefaultBareMemory || s.TSCSites != g.Sites || !s.Epoch.Equal(epoch) {
		t.Errorf("Spec = %+v", s)
	}
	h := g.Header(fakeHeaderVM{}, epoch, true)
	if want := NewHeader(fakeHeaderVM{}, g.Guest, epoch, true); !proto.Equal(h, want) || !h.Verify {
		t.Errorf("Header = %v, want %v", h, want)
	}
	if _, err := PrepareLinux([]byte("not a vmlinux"), nil, ""); err == nil {
		t.Error("PrepareLinux took a non-ELF kernel")
	}
}
