package virtio

// Memory is the package's only way into guest RAM. Slice returns guest
// physical memory [gpa, gpa+n) as one byte slice aliasing RAM, or false if
// any byte of that range is not RAM (MMIO holes, beyond the end, a range
// that spans two separately mapped regions). The caller reads and writes
// through the slice and does not keep it past the current call.
//
// Implementations need not be defensive: the package never asks for a
// negative length or a range that wraps around the address space, and it
// treats a slice shorter than n as "not RAM".
type Memory interface {
	Slice(gpa uint64, n int) ([]byte, bool)
}

// MemoryFunc adapts a function of the shape devices.DMATest already takes
// (the VMM's guest RAM lookup) to Memory.
type MemoryFunc func(gpa uint64, n int) ([]byte, bool)

// Slice implements Memory.
func (f MemoryFunc) Slice(gpa uint64, n int) ([]byte, bool) { return f(gpa, n) }

// FlatMemory is guest RAM as one byte slice starting at guest physical
// address Base: the reference Memory for tests and for VMMs with a single
// RAM region.
type FlatMemory struct {
	Base uint64
	Data []byte
}

// Slice implements Memory. The returned slice's capacity ends at gpa+n, so
// an append through it cannot reach the bytes after the range.
func (r FlatMemory) Slice(gpa uint64, n int) ([]byte, bool) {
	if n < 0 || gpa < r.Base {
		return nil, false
	}
	off := gpa - r.Base
	if off > uint64(len(r.Data)) || uint64(n) > uint64(len(r.Data))-off {
		return nil, false
	}
	return r.Data[off : off+uint64(n) : off+uint64(n)], true
}

// guestSlice is how the package calls Memory: it refuses negative lengths
// and ranges that wrap past 2^64 before asking, and a short answer after.
func guestSlice(mem Memory, gpa uint64, n int) ([]byte, bool) {
	if n < 0 || gpa+uint64(n) < gpa {
		return nil, false
	}
	b, ok := mem.Slice(gpa, n)
	if !ok || len(b) < n {
		return nil, false
	}
	return b[:n:n], true
}
