package vmm

import (
	"fmt"
	"time"
)

// StopReason says why a run ended without error.
type StopReason int

const (
	// StopExitPort: the guest wrote its exit status to ExitPort.
	StopExitPort StopReason = iota + 1
	// StopPowerOff: the guest halted with interrupts disabled, which is how
	// Linux without ACPI ends "poweroff" (and how a bare guest may end).
	StopPowerOff
	// StopReset: the guest asked for a reset (i8042 reset line).
	StopReset
)

func (r StopReason) String() string {
	switch r {
	case StopExitPort:
		return "exit port"
	case StopPowerOff:
		return "power off"
	case StopReset:
		return "reset"
	}
	return fmt.Sprintf("StopReason(%d)", int(r))
}

// Stats counts what happened during a run.
type Stats struct {
	Exits          [ExitOther + 1]uint64 // by ExitKind
	Kicks          uint64                // KVM_RUN returns with EINTR
	Windows        uint64                // interrupt-window exits (Window points, not counted in Exits)
	Interrupts     uint64                // vectors injected with KVM_INTERRUPT
	UnhandledPorts uint64                // accesses to ports with no device
	TSCReads       uint64                // trapped rdtsc/rdtscp
	// StrayCompletions counts DMA completions whose tag names no device
	// (only a malformed log has them); they are dropped.
	StrayCompletions uint64
}

// SyncExits is the number of synchronous exits (every exit but kicks).
func (s *Stats) SyncExits() uint64 {
	var n uint64
	for _, c := range s.Exits {
		n += c
	}
	return n
}

// Result is how a run ended.
type Result struct {
	Reason   StopReason
	Status   int // the byte written to ExitPort (StopExitPort only)
	Stats    Stats
	Duration time.Duration
}
