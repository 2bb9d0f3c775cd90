package virtio

import (
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
)

// attachedBackend is testBackend as a Device: it remembers its transport.
type attachedBackend struct {
	*testBackend
	m *MMIO
}

func (a *attachedBackend) Attach(m *MMIO)             { a.m = m }
func (a *attachedBackend) Complete(bounce.Completion) {}

func TestAttach(t *testing.T) {
	d := &attachedBackend{testBackend: newTestBackend()}
	m, err := Attach(d, FlatMemory{}, func(bool) {})
	if err != nil || m == nil || d.m != m {
		t.Fatalf("Attach: %v; the device holds %p, the transport is %p", err, d.m, m)
	}
	bad := &attachedBackend{testBackend: newTestBackend()}
	bad.max = nil
	if m, err := Attach(bad, FlatMemory{}, func(bool) {}); err == nil || m != nil || bad.m != nil {
		t.Error("a device the transport refuses was attached")
	}
}

// The option's form is what Linux's virtio_mmio parses:
// <size>@<base>:<irq>.
func TestKernelArg(t *testing.T) {
	if got, want := KernelArg(0xd0021000, 11), "virtio_mmio.device=0x200@0xd0021000:11"; got != want {
		t.Errorf("KernelArg = %q, want %q", got, want)
	}
}
