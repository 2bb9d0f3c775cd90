package vmm

import "time"

// Hooks for the external tests (package vmm_test), which run the real
// loop on vmmtest's vCPU.

// SetHostTime makes the run read the host's time from now (the stall
// watch, RunTime, Result.Duration).
func SetHostTime(v *VM, now func() time.Time) { v.now = now }

// InputBacklog is how many console bytes the VM holds back.
func InputBacklog(v *VM) int { return len(v.inputBacklog) }
