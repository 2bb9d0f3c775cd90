package vmm

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKVMVCPUWithoutKVM: the KVM vCPU's calls on a closed descriptor fail
// with the ioctl they wrap named, and the kvm_run fields it reads and
// writes are the header's.
func TestKVMVCPUWithoutKVM(t *testing.T) {
	run := fakeRun()
	c := &kvmVCPU{fd: -1, vmFd: -1, run: run}
	if errno := c.Run(); errno != unix.EBADF {
		t.Errorf("Run: %v, want EBADF", errno)
	}
	if e, err := c.Exit(); err != nil || e.Kind != ExitOther {
		t.Errorf("Exit of a blank kvm_run: %v %v", e.Kind, err)
	}
	if _, ok := c.Translate(0x1000); ok {
		t.Error("Translate without a vCPU")
	}
	for _, tc := range []struct {
		ioctl string
		err   error
	}{
		{"KVM_GET_DIRTY_LOG", c.DirtyLog(make([]uint64, 1))},
		{"KVM_SET_REGS", c.SetRegs(Regs{})},
		{"KVM_SET_SREGS", c.SetSregs(Sregs{})},
		{"KVM_INTERRUPT", c.Interrupt(0x20)},
		{"KVM_GET_REGS", func() error { _, err := c.CaptureState(); return err }()},
		{"KVM_SET_SREGS", c.ApplyState(VCPUState{})},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.ioctl) {
			t.Errorf("%v, want %s named", tc.err, tc.ioctl)
		}
	}
	h := runHeader(run)
	c.RequestWindow(true)
	c.SetImmediateExit(true)
	if h.RequestInterruptWindow != 1 || h.ImmediateExit != 1 {
		t.Errorf("window %d immediate %d", h.RequestInterruptWindow, h.ImmediateExit)
	}
	h.IfFlag, h.ReadyForInterruptInjection = 1, 0
	if ifFlag, ready := c.Interruptible(); !ifFlag || ready {
		t.Errorf("Interruptible %v %v, want true false", ifFlag, ready)
	}
	if got := probeStateMSRs(-1); len(got) != 0 {
		t.Errorf("MSRs read without a vCPU: %v", got)
	}
	if _, err := getMSRs(-1, make([]uint32, maxStateMSRs+1)); err == nil {
		t.Error("getMSRs beyond its buffer")
	}
	if err := setMSRs(-1, []uint32{1}, nil); err == nil {
		t.Error("setMSRs with a value missing")
	}
	if _, err := newKVMVCPU(-1, -1); err == nil || !strings.Contains(err.Error(), "KVM_CREATE_VCPU") {
		t.Errorf("newKVMVCPU without KVM: %v", err)
	}
	c.run = nil // not a mapping: Close must not unmap it
	c.Close()
	if c.fd != -1 {
		t.Error("Close")
	}
}
