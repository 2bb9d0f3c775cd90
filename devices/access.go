package devices

// The ISA bus splits a wide access to an 8-bit device into byte cycles at
// consecutive ports, so a 16-bit "in" at port P reads P then P+1. The port
// devices here model that: readBytes and writeBytes turn an access of any
// length into single-byte register accesses at offset, offset+1, and so on.
// An offset past the device's registers is an unknown register.

// readBytes fills data[i] with read(offset+i).
func readBytes(offset uint64, data []byte, read func(off uint64) byte) {
	for i := range data {
		off := offset + uint64(i)
		if off < offset { // wrapped around: not a register of anything
			data[i] = 0xff
			continue
		}
		data[i] = read(off)
	}
}

// writeBytes calls write(offset+i, data[i]) for each byte.
func writeBytes(offset uint64, data []byte, write func(off uint64, v byte)) {
	for i, v := range data {
		off := offset + uint64(i)
		if off < offset {
			continue
		}
		write(off, v)
	}
}

// deviceFuncs adapts a pair of byte-register functions to Device.
type deviceFuncs struct {
	read  func(off uint64) byte
	write func(off uint64, v byte)
}

func (d deviceFuncs) Read(offset uint64, data []byte)  { readBytes(offset, data, d.read) }
func (d deviceFuncs) Write(offset uint64, data []byte) { writeBytes(offset, data, d.write) }

// toBCD encodes v (taken modulo 100) as two BCD digits.
func toBCD(v int) byte {
	if v < 0 {
		v = -v
	}
	v %= 100
	return byte(v/10)<<4 | byte(v%10)
}

// fromBCD decodes two BCD digits. Invalid digits (A-F) are taken at face
// value, so the result is at most 165; it never fails.
func fromBCD(b byte) int { return int(b>>4)*10 + int(b&0x0f) }
