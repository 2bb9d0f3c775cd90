package vmmtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

// TestFakeBehavesAsKVMDoes: an entry with immediate_exit set runs no
// guest code; an injected vector reaches the guest at the next entry that
// runs it; the dirty log resets.
func TestFakeBehavesAsKVMDoes(t *testing.T) {
	var seen [][]uint8
	c := vmmtest.NewVCPU(func(c *vmmtest.VCPU) vmmtest.Step {
		seen = append(seen, c.Entering())
		return vmmtest.HLT()
	})
	if err := c.Interrupt(0x20); err != nil {
		t.Fatal(err)
	}
	c.SetImmediateExit(true)
	if errno := c.Run(); errno != unix.EINTR || c.Entries() != 0 {
		t.Fatalf("immediate exit: %v, %d entries", errno, c.Entries())
	}
	c.SetImmediateExit(false)
	c.Run()
	c.Run()
	if fmt.Sprint(seen) != "[[32] []]" {
		t.Errorf("vectors at each entry %v, want 0x20 at the first only", seen)
	}
	if e, err := c.Exit(); err != nil || e.Kind != vmm.ExitHLT {
		t.Errorf("exit %v %v", e.Kind, err)
	}
	c.MarkDirty(3)
	bitmap := make([]uint64, 1)
	if err := c.DirtyLog(bitmap); err != nil || bitmap[0] != 1<<3 {
		t.Errorf("dirty log %b %v", bitmap[0], err)
	}
	if c.DirtyLog(bitmap); bitmap[0] != 0 {
		t.Error("dirty log not reset")
	}
	c.MarkDirty(64)
	if err := c.DirtyLog(bitmap); err == nil {
		t.Error("a dirty page outside memory")
	}
}

// TestScriptEnds: a run whose script is used up fails instead of
// hanging.
func TestScriptEnds(t *testing.T) {
	vm, _ := vmmtest.New(t, vmm.Config{}, vmmtest.Script(vmmtest.Out(0x80, 0)))
	if _, err := vm.Run(context.Background()); !errors.Is(err, vmmtest.ErrScriptEnded) {
		t.Errorf("%v, want ErrScriptEnded", err)
	}
}
