package vmm

import (
	"debug/elf"
	"testing"
)

// Hooks for the external tests (package vmm_test), which run the real
// loop on vmmtest's vCPU.

// InputBacklog is how many console bytes the VM holds back.
func InputBacklog(v *VM) int { return len(v.inputBacklog) }

// MinimalKernel is a 64-bit vmlinux of one hlt at 16 MiB.
func MinimalKernel(t *testing.T) []byte {
	return minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x1000000, []byte{0xf4})
}

// HashPages and PageTablePages are the VM's page hashing and page-table
// walk (unexported: landmarks use them inside vmm).
func HashPages(v *VM, pages []uint32) ([32]byte, error) { return v.pagesHash(pages) }

func PageTablePages(v *VM) (map[uint32]bool, error) { return v.pageTables() }

// MachineVM is the VM behind a Machine the run loop handed its Driver.
func MachineVM(m Machine) *VM { return m.(machine).VM }
