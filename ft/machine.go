package ft

import (
	"context"
	"errors"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// Machine is one side's VM as ft runs it: built and loaded by a
// MachineFactory, run once with the driver (recorder or replayer) and
// console ft put in its vmm.Config, then closed. vmm.VM.Machine is one
// (through the default factory); tests use a toy machine without KVM.
type Machine interface {
	vmm.Machine
	// Run runs the guest until it stops, the context ends or the driver
	// fails.
	Run(ctx context.Context) (vmm.Result, error)
	// Exits counts the synchronous exits so far; safe from any goroutine.
	Exits() uint64
	Close() error
}

// MachineFactory builds one side's machine from vc (the Guest's Spec and
// Options with ft's epoch, console and driver), loads the guest into it,
// and returns it with its log header (whose RTC epoch is vc.Spec.Epoch).
// The backup also builds one with no driver, only to hash its header
// before it connects.
type MachineFactory func(vc vmm.Config) (Machine, *logpb.Header, error)

// newMachine is the default factory: vmm.New, then Guest.Load and
// Guest.Header.
func (g *Guest) newMachine(vc vmm.Config) (Machine, *logpb.Header, error) {
	if g.Load == nil || g.Header == nil {
		return nil, nil, errors.New("ft: Guest.Load and Guest.Header are required without Config.NewMachine")
	}
	vm, err := vmm.New(vc)
	if err != nil {
		return nil, nil, err
	}
	if err := g.Load(vm); err != nil {
		vm.Close()
		return nil, nil, err
	}
	// vm.Machine carries the VM's own methods too (Run, Exits, Close), and
	// the optional capabilities the recorder and replayer look for
	// (vmm.WriteReplayer, vmm.PageCopier), which a wrapper here would hide.
	return vm.Machine().(Machine), g.Header(vm, vc.Spec.Epoch), nil
}

// machine builds this side's machine with the configured factory.
func (c *Config) machine(vc vmm.Config) (Machine, *logpb.Header, error) {
	if c.NewMachine != nil {
		return c.NewMachine(vc)
	}
	return c.Guest.newMachine(vc)
}
