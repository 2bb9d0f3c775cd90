package vmm

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/tscpatch"
)

// timeMSRs are the MSRs through which a guest can read time or program
// timers: KVM's MSR filter sends every access to them to the VMM
// (timeMSR), so that a recording logs what they read.
var timeMSRs = []uint32{
	0x10,       // IA32_TSC
	0x3B,       // IA32_TSC_ADJUST
	0xE7, 0xE8, // IA32_MPERF, IA32_APERF
	0x6E0,      // IA32_TSC_DEADLINE
	0x11, 0x12, // KVM's old kvmclock MSRs
	0x4B564D00, 0x4B564D01, // KVM's kvmclock MSRs
}

// timeMSR answers a trapped access to one of timeMSRs. IA32_TSC, MPERF and
// APERF read the driver's TSC (logged by a recorder, replayed from the log);
// the others read 0: this VM has no TSC adjustment, local APIC timer or
// kvmclock. Writes raise #GP: the guest's TSC is the VMM's.
func (v *VM) timeMSR(e Exit) error {
	if e.Kind == ExitWRMSR {
		e.MSRError[0] = 1 // #GP at the next entry
		v.exitFaults = true
		return nil
	}
	var val uint64
	switch e.MSR {
	case 0x10, 0xE7, 0xE8:
		tsc, err := v.driver.TSC(machine{v}, v.point)
		if err != nil {
			return err
		}
		val = tsc
		v.stats.TSCReads++
	}
	binary.LittleEndian.PutUint64(e.MSRData, val)
	e.MSRError[0] = 0
	return nil
}

// trappedTSC handles an OUT from a patched rdtsc/rdtscp site: it lets KVM
// complete the OUT (immediate_exit: no guest instruction runs), checks that
// it came from a listed site, and loads the TSC value into EDX:EAX (and
// TSC_AUX, always 0, into ECX for rdtscp).
func (v *VM) trappedTSC(e Exit) *stopRun {
	if errno := v.complete(); errno != unix.EINTR {
		return &stopRun{err: fmt.Errorf("completing trapped rdtsc: KVM_RUN returned %v, want EINTR", errno)}
	}
	regs, err := v.Regs()
	if err != nil {
		return &stopRun{err: err}
	}
	sregs, err := v.Sregs()
	if err != nil {
		return &stopRun{err: err}
	}
	gpa, ok := v.translate(sregs, regs.RIP-2)
	if !ok {
		return &stopRun{err: v.guestError("rdtsc trap from unmapped code", "")}
	}
	site, err := v.cfg.TSCSites.Check(e.Port, true, e.Size, gpa)
	if err != nil {
		return &stopRun{err: &GuestError{What: "write to the reserved rdtsc port", RIP: regs.RIP - 2, More: err.Error()}}
	}
	tsc, err := v.driver.TSC(machine{v}, v.point)
	if err != nil {
		return &stopRun{err: err}
	}
	regs.RAX = tsc & 0xFFFFFFFF
	regs.RDX = tsc >> 32
	if site.Kind == tscpatch.RDTSCP {
		regs.RCX = 0
	}
	if err := v.cpu.SetRegs(regs); err != nil {
		return &stopRun{err: fmt.Errorf("setting rdtsc result: %w", err)}
	}
	v.stats.TSCReads++
	return nil
}
