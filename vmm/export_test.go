package vmm

import (
	"debug/elf"
	"testing"
	"time"
)

// Hooks for the external tests (package vmm_test), which run the real
// loop on vmmtest's vCPU.

// SetHostTime makes the run read the host's time from now (the stall
// watch, RunTime, Result.Duration).
func SetHostTime(v *VM, now func() time.Time) { v.now = now }

// InputBacklog is how many console bytes the VM holds back.
func InputBacklog(v *VM) int { return len(v.inputBacklog) }

// MinimalKernel is a 64-bit vmlinux of one hlt at 16 MiB.
func MinimalKernel(t *testing.T) []byte {
	return minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x1000000, []byte{0xf4})
}
