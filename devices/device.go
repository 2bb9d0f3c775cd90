package devices

// Device is a register window on the I/O bus (port I/O or MMIO). The bus
// passes the offset from the start of the window the device was registered
// at. A device must accept any offset and any data length (1, 2, 4 or 8
// bytes, or anything a hostile guest manages to produce): unknown registers
// read as all ones or zero and writes to them are ignored. Devices never
// panic on guest input.
//
// Read and Write are only ever called on the vCPU thread.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// Clock is the only way host time enters a device model. The VMM passes one
// Clock to every device; a recorder wraps it to log each reading and a
// replayer substitutes the logged readings, so device state stays a
// deterministic function of the guest's accesses and the clock's answers.
type Clock interface {
	// Now returns monotonic time in nanoseconds counted from the VM's
	// creation: 0 is the moment the VM started, and successive readings
	// never decrease. The origin belongs to the VM, not to the host: a VM
	// restored from a snapshot (or a backup going live) must keep counting
	// on the saved VM's timeline, because device state (PIT load times,
	// CMOS offset) is stored relative to it.
	Now() int64
}

// IRQLine is an interrupt input of the interrupt controller. Devices
// drive their line high or low; the PIC latches edges (or levels, per ELCR).
type IRQLine interface {
	SetIRQ(irq int, high bool)
}
