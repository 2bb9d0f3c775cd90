package snapshot

import (
	"errors"
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/vmm"
)

// ErrStopped is wrapped by the error a run stopped by StopAfter ends with:
// the VM stands at a synchronous exit, ready for Write.
var ErrStopped = errors.New("stopped for a snapshot")

// StopAfter wraps d so that the run stops at the first synchronous exit
// after the guest has run for after (vmm.Machine.RunTime: time inside
// KVM_RUN), before anything is delivered or injected there: vm.Run
// returns an error wrapping ErrStopped, and the VM can be saved with
// Write.
func StopAfter(d vmm.Driver, after time.Duration) vmm.Driver {
	return &stopAfter{Driver: d, after: after}
}

type stopAfter struct {
	vmm.Driver
	after time.Duration
}

// Deliver implements vmm.Driver.
func (s *stopAfter) Deliver(vm vmm.Machine, p vmm.Point) (bool, error) {
	if p.Kind == vmm.AtExit && p.Exits > 0 && vm.RunTime() >= s.after {
		return false, fmt.Errorf("%w at %v after %v of guest time", ErrStopped, p, vm.RunTime().Round(time.Millisecond))
	}
	return s.Driver.Deliver(vm, p)
}
