package vmm

// translate maps a linear address to a guest physical one.
func (v *VM) translate(sregs Sregs, linear uint64) (uint64, bool) {
	if sregs.CR0&cr0PG == 0 {
		return linear, true
	}
	return v.cpu.Translate(linear)
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
	return regs, codeAt(v.mem.Bytes(), gpa)
}

// codeAt returns a copy of up to 15 bytes (the longest x86 instruction) of
// mem at gpa, or nil if gpa is outside mem. It does not read across the
// page: the next page may map elsewhere.
func codeAt(mem []byte, gpa uint64) []byte {
	if gpa >= uint64(len(mem)) {
		return nil
	}
	n := min(15, pageSize-gpa%pageSize, uint64(len(mem))-gpa)
	return append([]byte(nil), mem[gpa:gpa+n]...)
}

// guestError is a GuestError at the vCPU's current instruction.
func (v *VM) guestError(what, more string) error {
	regs, b := v.instructionAt()
	return &GuestError{What: what, RIP: regs.RIP, Bytes: b, More: more}
}
