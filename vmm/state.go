package vmm

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	mathbits "math/bits"

	"github.com/cespare/xxhash/v2"
)

// DirtyPages returns the guest page frames written since the previous call
// (or since the VM was created), ascending, and resets KVM's dirty log.
// The VM must have been created with TrackDirty.
func (v machine) DirtyPages() ([]uint32, error) {
	if !v.cfg.TrackDirty {
		return nil, fmt.Errorf("dirty-page log not enabled (Config.TrackDirty)")
	}
	npages := v.mem.Size() / pageSize
	bitmap := make([]uint64, (npages+63)/64)
	if err := v.cpu.DirtyLog(bitmap); err != nil {
		return nil, err
	}
	var pages []uint32
	for i, word := range bitmap {
		for word != 0 {
			b := mathbits.TrailingZeros64(word)
			pages = append(pages, uint32(i*64+b))
			word &^= 1 << b
		}
	}
	return pages, nil
}

// PageCopier is an optional capability of a Machine: copying pages into
// a buffer the caller reuses. A recorder copies a landmark's pages on the
// vCPU thread; into a fresh allocation per page (PageContents) that costs
// several times the copy itself, in zeroing and first-touch page faults.
type PageCopier interface {
	// CopyPages appends the 4 KiB contents of each listed page frame to
	// dst, in order, and returns the extended slice.
	CopyPages(dst []byte, pages []uint32) ([]byte, error)
}

var _ PageCopier = machine{}

// CopyPages implements PageCopier. A frame outside guest memory is an
// error, and dst is returned as it was.
func (v machine) CopyPages(dst []byte, pages []uint32) ([]byte, error) {
	n := len(dst)
	for _, pfn := range pages {
		page, err := v.mem.Slice(GuestAddress(uint64(pfn)*pageSize), pageSize)
		if err != nil {
			return dst[:n], fmt.Errorf("page %#x: %w", pfn, err)
		}
		dst = append(dst, page...)
	}
	return dst, nil
}

// pagesHash hashes the listed page frames' numbers and contents, for a
// landmark. In the pages of the current paging hierarchy (pageTables)
// the Accessed and Dirty bits of every entry are left out: the processor
// sets them as it walks the tables, and under shadow paging (kvm_pvm) they
// reach guest memory at moments that differ between a free run and a
// single-stepped one, so they do not describe an instruction boundary.
// Frames outside guest memory are an error (a log naming them is not ours).
func (v *VM) pagesHash(pages []uint32) ([32]byte, error) {
	tables, err := v.pageTables()
	if err != nil {
		return [32]byte{}, err
	}
	return hashPages(v.mem, tables, pages)
}

// hashPages is pagesHash over mem, with the page-table frames tables.
func hashPages(mem *Memory, tables map[uint32]bool, pages []uint32) ([32]byte, error) {
	h := sha256.New()
	var n [4]byte
	masked := make([]byte, pageSize)
	for _, pfn := range pages {
		page, err := mem.Slice(GuestAddress(uint64(pfn)*pageSize), pageSize)
		if err != nil {
			return [32]byte{}, fmt.Errorf("hashing page %#x: %w", pfn, err)
		}
		binary.LittleEndian.PutUint32(n[:], pfn)
		h.Write(n[:])
		if tables[pfn] {
			maskAD(masked, page)
			page = masked
		}
		h.Write(page)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// GPRs returns the general registers in a fixed order: rax rbx rcx rdx
// rsi rdi rsp rbp r8..r15.
func GPRs(r Regs) []uint64 {
	return []uint64{r.RAX, r.RBX, r.RCX, r.RDX, r.RSI, r.RDI, r.RSP, r.RBP,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15}
}

// FingerprintScheme names how Fingerprint is computed; a log header pins
// it, so a log is never checked against fingerprints computed another way.
const FingerprintScheme = "sha256(regs,xxh64/page)"

// Fingerprint hashes the machine state: general and control registers,
// segment bases and selectors, and all of guest memory. Two runs that
// agree on it are in the same state.
//
// Memory enters as one 64-bit xxHash per 4 KiB page, and SHA-256 hashes
// those digests with the registers (FingerprintScheme). Under an emulated
// host that is about 20 times faster than SHA-256 over all of memory
// (21 ms against 418 ms for 16 MiB), and two pages that differ still
// collide with probability 2^-64: the fingerprint detects divergence, it
// does not authenticate a log.
func (v *VM) Fingerprint() ([32]byte, error) {
	regs, err := v.Regs()
	if err != nil {
		return [32]byte{}, err
	}
	sregs, err := v.Sregs()
	if err != nil {
		return [32]byte{}, err
	}
	return fingerprint(regs, sregs, v.mem.Bytes()), nil
}

// fingerprint is Fingerprint of the given registers and guest memory.
func fingerprint(regs Regs, sregs Sregs, mem []byte) [32]byte {
	h := sha256.New()
	var b [8]byte
	put := func(x uint64) {
		binary.LittleEndian.PutUint64(b[:], x)
		h.Write(b[:])
	}
	for _, x := range GPRs(regs) {
		put(x)
	}
	put(regs.RIP)
	put(regs.RFLAGS)
	for _, seg := range []struct {
		base uint64
		sel  uint16
	}{{sregs.CS.Base, sregs.CS.Selector}, {sregs.DS.Base, sregs.DS.Selector}, {sregs.ES.Base, sregs.ES.Selector},
		{sregs.FS.Base, sregs.FS.Selector}, {sregs.GS.Base, sregs.GS.Selector}, {sregs.SS.Base, sregs.SS.Selector}} {
		put(seg.base)
		put(uint64(seg.sel))
	}
	for _, x := range []uint64{sregs.CR0, sregs.CR3, sregs.CR4, sregs.EFER, sregs.GDT.Base, sregs.IDT.Base} {
		put(x)
	}
	digests := make([]byte, 0, 8*len(mem)/pageSize+8)
	for off := 0; off < len(mem); off += pageSize {
		digests = binary.LittleEndian.AppendUint64(digests, xxhash.Sum64(mem[off:min(off+pageSize, len(mem))]))
	}
	h.Write(digests)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

const (
	pteAccessed = 1 << 5
	pteDirty    = 1 << 6
	pteAddrMask = 0x000F_FFFF_FFFF_F000
)

// pageTables returns the page frames of the vCPU's current 4-level
// paging hierarchy (from CR3: PML4, page-directory-pointer tables, page
// directories and page tables), or none when paging is off. Entries that
// point outside guest memory are skipped, so a hostile guest's tables
// cannot make the walk read outside it.
func (v *VM) pageTables() (map[uint32]bool, error) {
	sregs, err := v.Sregs()
	if err != nil {
		return nil, err
	}
	return pageTableFrames(v.mem.Bytes(), sregs), nil
}

// pageTableFrames walks the 4-level paging hierarchy that sregs names
// over guest memory mem (pageTables).
func pageTableFrames(mem []byte, sregs Sregs) map[uint32]bool {
	tables := map[uint32]bool{}
	if sregs.CR0&cr0PG == 0 || sregs.EFER&eferLMA == 0 {
		return tables
	}
	var walk func(addr uint64, level int)
	walk = func(addr uint64, level int) {
		pfn := uint32(addr / pageSize)
		if addr+pageSize > uint64(len(mem)) || tables[pfn] {
			return
		}
		tables[pfn] = true
		if level == 1 {
			return
		}
		page := mem[addr : addr+pageSize]
		for i := 0; i < pageSize; i += 8 {
			e := binary.LittleEndian.Uint64(page[i:])
			if e&pteP == 0 || (level <= 3 && e&ptePS != 0) {
				continue // not present, or a 1 GiB / 2 MiB page
			}
			walk(e&pteAddrMask, level-1)
		}
	}
	walk(sregs.CR3&pteAddrMask, 4)
	return tables
}

// memoryCRC is a CRC-32C of all guest memory with the Accessed and Dirty
// bits of the current paging hierarchy left out (see pagesHash).
func (v *VM) memoryCRC() (uint32, error) {
	tables, err := v.pageTables()
	if err != nil {
		return 0, err
	}
	return maskedCRC(v.mem.Bytes(), tables), nil
}

// maskedCRC is a CRC-32C of mem with the Accessed and Dirty bits of the
// entries in the page frames tables left out.
func maskedCRC(mem []byte, tables map[uint32]bool) uint32 {
	masked := make([]byte, pageSize)
	var crc uint32
	for pfn := 0; pfn*pageSize < len(mem); pfn++ {
		page := mem[pfn*pageSize : (pfn+1)*pageSize]
		if tables[uint32(pfn)] {
			maskAD(masked, page)
			page = masked
		}
		crc = crc32.Update(crc, castagnoli, page)
	}
	return crc
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskAD copies a page-table page with every entry's Accessed and Dirty
// bits cleared.
func maskAD(dst, page []byte) {
	for i := 0; i < pageSize; i += 8 {
		e := binary.LittleEndian.Uint64(page[i:]) &^ (pteAccessed | pteDirty)
		binary.LittleEndian.PutUint64(dst[i:], e)
	}
}
