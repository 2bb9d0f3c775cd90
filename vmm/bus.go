package vmm

import (
	"fmt"
	"sort"

	"github.com/ftkvm/ftkvm/devices"
)

// Bus maps non-overlapping address ranges (port I/O or MMIO) to devices.
type Bus struct {
	name    string
	entries []busEntry // sorted by base
}

type busEntry struct {
	base, size uint64
	name       string
	dev        devices.Device
}

// newBus returns an empty bus; name ("pio", "mmio") appears in errors.
func newBus(name string) *Bus { return &Bus{name: name} }

// Register attaches dev at [base, base+size).
func (b *Bus) Register(name string, base, size uint64, dev devices.Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: %s: bad range base %#x size %#x", b.name, name, base, size)
	}
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 {
		prev := b.entries[i-1]
		if prev.base+prev.size > base {
			return fmt.Errorf("%s bus: %s at %#x overlaps %s at [%#x, %#x)", b.name, name, base, prev.name, prev.base, prev.base+prev.size)
		}
	}
	if i < len(b.entries) && base+size > b.entries[i].base {
		next := b.entries[i]
		return fmt.Errorf("%s bus: %s at [%#x, %#x) overlaps %s at %#x", b.name, name, base, base+size, next.name, next.base)
	}
	b.entries = append(b.entries, busEntry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = busEntry{base: base, size: size, name: name, dev: dev}
	return nil
}

// Lookup finds the device covering addr and the offset into its window.
// An access is routed by its first byte, as on a PC's buses.
func (b *Bus) Lookup(addr uint64) (dev devices.Device, offset uint64, ok bool) {
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base > addr })
	if i == 0 {
		return nil, 0, false
	}
	e := b.entries[i-1]
	if addr-e.base >= e.size {
		return nil, 0, false
	}
	return e.dev, addr - e.base, true
}
