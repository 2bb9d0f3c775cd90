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

	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

// onFakeVCPU makes RecordFile and ReplayFile build their VMs on vmmtest's
// fake vCPU playing a fresh script from steps() for each VM: the real VM,
// devices, loop, recorder and replayer, with no KVM.
func onFakeVCPU(t *testing.T, steps func() []vmmtest.Step) {
	t.Helper()
	old := newVM
	t.Cleanup(func() { newVM = old })
	newVM = func(cfg vmm.Config) (*vmm.VM, error) {
		mem, err := vmm.NewMemory(cfg.MemoryBytes)
		if err != nil {
			return nil, err
		}
		return vmm.NewWithVCPU(cfg, vmmtest.NewVCPU(vmmtest.Script(steps()...)), mem)
	}
}

// printing writes s to COM1, reads the PIT's counter (a logged clock
// read) and exits with status.
func printing(s string, status byte) func() []vmmtest.Step {
	return func() []vmmtest.Step {
		var steps []vmmtest.Step
		for i := 0; i < len(s); i++ {
			steps = append(steps, vmmtest.Out(0x3F8, s[i]))
			if i == 1 {
				steps = append(steps, vmmtest.Out(0x43, 0x00), vmmtest.In(0x40, 1))
			}
		}
		return append(steps, vmmtest.Out(vmm.ExitPort, status))
	}
}

func bareGuest(t *testing.T) *PreparedGuest {
	t.Helper()
	g, err := PrepareBare([]byte{0xf4}) // hlt: the fake vCPU never runs it
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestRecordFileThenReplayFile(t *testing.T) {
	onFakeVCPU(t, printing("hello\n", 0))
	path := filepath.Join(t.TempDir(), "run.log")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g := bareGuest(t)
	var out bytes.Buffer
	res, err := RecordFile(ctx, path, g, FileConfig{Console: &out, FingerprintEvery: 2})
	if err != nil || res.Reason != vmm.StopExitPort || res.Status != 0 {
		t.Fatalf("RecordFile: %+v, %v", res, err)
	}
	if out.String() != "hello\n" {
		t.Fatalf("console %q", out.String())
	}
	if _, err := os.Stat(path + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the partial file is still there: %v", err)
	}
	out.Reset()
	if res, err := ReplayFile(ctx, path, g, FileConfig{Console: &out}); err != nil || res.Status != 0 || out.String() != "hello\n" {
		t.Fatalf("ReplayFile: %+v, %v, console %q", res, err, out.String())
	}

	// A guest that prints something else is not the recorded run.
	onFakeVCPU(t, printing("help!\n", 0))
	if _, err := ReplayFile(ctx, path, g, FileConfig{}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("replay of another guest's run: %v, want a divergence", err)
	}
	// Nor one that ends with another status.
	onFakeVCPU(t, printing("hello\n", 3))
	if _, err := ReplayFile(ctx, path, g, FileConfig{}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("replay ending with another status: %v, want a divergence", err)
	}
	// A guest prepared otherwise is refused before it runs.
	other, err := PrepareBare([]byte{0x90, 0xf4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReplayFile(ctx, path, other, FileConfig{}); err == nil || !strings.Contains(err.Error(), "cannot replay on this VM") {
		t.Fatalf("replay on another image: %v", err)
	}
}

// A recording that fails before its first event leaves no file; one whose
// options are the files' own is refused.
func TestRecordFileFailures(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.log")
	old := newVM
	t.Cleanup(func() { newVM = old })
	broken := errors.New("no VM here")
	newVM = func(vmm.Config) (*vmm.VM, error) { return nil, broken }
	if _, err := RecordFile(context.Background(), path, bareGuest(t), FileConfig{}); !errors.Is(err, broken) {
		t.Fatalf("RecordFile: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a failed recording left %v", ents)
	}
	if _, err := RecordFile(context.Background(), path, bareGuest(t), FileConfig{Options: vmm.Options{Console: &bytes.Buffer{}}}); !errors.Is(err, vmm.ErrInvalidConfig) {
		t.Fatalf("Options.Console set: %v", err)
	}
	if _, err := ReplayFile(context.Background(), filepath.Join(dir, "missing.log"), bareGuest(t), FileConfig{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replay of a missing file: %v", err)
	}
	// A run whose vCPU fails still ends its log (the End event records the
	// error), so the log takes its name, and RecordFile returns the error.
	onFakeVCPU(t, func() []vmmtest.Step { return []vmmtest.Step{vmmtest.Out(0x3F8, 'x')} }) // then the script ends: KVM_RUN fails
	if _, err := RecordFile(context.Background(), path, bareGuest(t), FileConfig{}); err == nil || !strings.Contains(err.Error(), "KVM_RUN") {
		t.Fatalf("a run whose vCPU failed: %v", err)
	}
	if _, err := os.Stat(path + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the ended log stayed partial: %v", err)
	}
	if _, err := ReplayFile(context.Background(), path, bareGuest(t), FileConfig{}); err == nil {
		t.Fatal("the failed run's log replayed as a clean run")
	}
}
