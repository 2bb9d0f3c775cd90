package vmm

import "github.com/bobuhiro11/gokvm/kvm"

// translate maps a linear address to a guest physical one.
func (v *VM) translate(sregs Sregs, linear uint64) (uint64, bool) {
	if sregs.CR0&cr0PG == 0 {
		return linear, true
	}
	t := kvm.Translation{LinearAddress: linear}
	if err := kvm.Translate(uintptr(v.vcpuFd), &t); err != nil || t.Valid == 0 {
		return 0, false
	}
	return t.PhysicalAddress, true
}

// instructionAt returns the guest RIP and up to 15 instruction bytes there.
func (v *VM) instructionAt() (Regs, []byte) {
	regs, err := v.Regs()
	if err != nil {
		return regs, nil
	}
	sregs, err := v.Sregs()
	if err != nil {
		return regs, nil
	}
	gpa, ok := v.translate(sregs, sregs.CS.Base+regs.RIP)
	if !ok {
		return regs, nil
	}
	n := uint64(15)
	if gpa >= v.mem.Size() {
		return regs, nil
	}
	// Do not read across the page: the next page may map elsewhere.
	n = min(n, pageSize-gpa%pageSize, v.mem.Size()-gpa)
	b := make([]byte, n)
	if v.mem.ReadAt(b, GuestAddress(gpa)) != nil {
		return regs, nil
	}
	return regs, b
}

func (v *VM) guestError(what, more string) error {
	regs, b := v.instructionAt()
	return &GuestError{What: what, RIP: regs.RIP, Bytes: b, More: more}
}
