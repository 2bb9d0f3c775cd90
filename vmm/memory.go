package vmm

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// GuestAddress is a guest physical address.
type GuestAddress uint64

// Memory is the guest's RAM: one contiguous region starting at guest
// physical address 0. Every access is bounds-checked, so an address or
// length a guest controls can never reach host memory outside the region.
type Memory struct {
	buf []byte
}

// NewMemory maps size bytes of anonymous memory for a guest. Pages are
// allocated by the host kernel on first touch.
func NewMemory(size uint64) (*Memory, error) {
	if size == 0 || size%pageSize != 0 {
		return nil, fmt.Errorf("guest memory size %d: must be a non-zero multiple of %d", size, pageSize)
	}
	buf, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d bytes of guest memory: %w", size, err)
	}
	return &Memory{buf: buf}, nil
}

// Size is the number of bytes of guest RAM.
func (m *Memory) Size() uint64 { return uint64(len(m.buf)) }

// Slice returns the n bytes at addr, aliasing guest memory.
func (m *Memory) Slice(addr GuestAddress, n uint64) ([]byte, error) {
	if uint64(addr) > m.Size() || n > m.Size()-uint64(addr) {
		return nil, fmt.Errorf("guest range [%#x, +%#x) outside memory of %#x bytes", uint64(addr), n, m.Size())
	}
	return m.buf[addr : uint64(addr)+n : uint64(addr)+n], nil
}

// ReadAt copies guest memory at addr into p.
func (m *Memory) ReadAt(p []byte, addr GuestAddress) error {
	s, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest memory at addr.
func (m *Memory) WriteAt(p []byte, addr GuestAddress) error {
	s, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Write64 stores a little-endian uint64 at addr.
func (m *Memory) Write64(addr GuestAddress, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return m.WriteAt(b[:], addr)
}

// Bytes exposes the whole of guest RAM (for hashing and snapshots).
func (m *Memory) Bytes() []byte { return m.buf }

// Close unmaps guest memory. The Memory must not be used afterwards.
func (m *Memory) Close() error {
	if m.buf == nil {
		return nil
	}
	err := unix.Munmap(m.buf)
	m.buf = nil
	return err
}
