package replay

// A landmark's capture on the vCPU thread (a copy of the vCPU state and
// the dirty pages) and its finishing off it (zero test, hash, zstd) in the
// recorder's log pipe.

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// landmarkSource is what capturing a landmark needs of the VM. A
// vmm.PageCopier copies the pages into the recorder's buffer.
type landmarkSource interface {
	CaptureVCPUState() (vmm.VCPUState, error)
	DirtyPages() ([]uint32, error)
	PageContents(pfn uint32) ([]byte, error)
}

// rawLandmark is a landmark as the vCPU thread captures it: the vCPU
// state and a copy of every dirty page, not yet hashed or compressed
// (finish does that, off the vCPU thread).
type rawLandmark struct {
	lm  *logpb.Landmark // all but page_data, pages_sha256 and pages_zstd
	buf []byte          // the pages' contents, 4096 bytes each, in lm.Pages order
}

// captureLandmark records where the vCPU stands between two exits, with
// what a replay needs to get there without locating the point: the whole
// vCPU state and the contents of every page written since the previous
// landmark (state transfer, see the package doc). Pages written only
// before the last exit are carried too, needlessly but harmlessly: the
// replay has the same contents. Resetting KVM's dirty log at every exit
// instead would cost a write-protection fault per page written after
// each exit, which on an emulated host made recording several times
// slower.
//
// It only copies, into buf (reused from an earlier landmark where it can
// be: memory already touched takes a copy several times faster than
// fresh memory). The guest runs on once it returns.
func captureLandmark(vm landmarkSource, buf []byte) (*rawLandmark, error) {
	st, err := vm.CaptureVCPUState()
	if err != nil {
		return nil, err
	}
	pages, err := vm.DirtyPages()
	if err != nil {
		return nil, err
	}
	blob, err := st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if need := len(pages) * 4096; cap(buf) < need {
		buf = make([]byte, 0, need+need/4)
	}
	buf = buf[:0]
	if pc, ok := vm.(vmm.PageCopier); ok {
		if buf, err = pc.CopyPages(buf, pages); err != nil {
			return nil, err
		}
	} else {
		for _, pfn := range pages {
			data, err := vm.PageContents(pfn)
			if err != nil {
				return nil, err
			}
			buf = append(buf, data...)
		}
	}
	if len(buf) != len(pages)*4096 {
		return nil, fmt.Errorf("landmark: %d bytes copied for %d pages", len(buf), len(pages))
	}
	lm := &logpb.Landmark{Rip: st.Regs.RIP, Rflags: st.Regs.RFLAGS, Gprs: vmm.GPRs(st.Regs), Pages: pages, VcpuState: blob}
	return &rawLandmark{lm: lm, buf: buf}, nil
}

// finish completes the landmark from the copied pages: which are all
// zeros, the SHA-256 over frame numbers and contents, and the non-zero
// pages zstd-compressed. It returns the landmark, how many pages were
// zeros and the page buffer, free for another capture. It needs nothing
// of the VM, so any goroutine may run it.
func (raw *rawLandmark) finish() (*logpb.Landmark, int, []byte) {
	lm, buf := raw.lm, raw.buf
	raw.buf = nil
	h := sha256.New()
	var n [4]byte
	lm.PageData = make([]*logpb.Page, len(lm.Pages))
	kept := 0 // non-zero pages, moved to the front of buf in order
	for i, pfn := range lm.Pages {
		data := buf[i*4096 : (i+1)*4096]
		binary.LittleEndian.PutUint32(n[:], pfn)
		h.Write(n[:])
		h.Write(data)
		zero := isZero(data)
		lm.PageData[i] = &logpb.Page{Pfn: pfn, Zero: zero}
		if !zero {
			if kept != i {
				copy(buf[kept*4096:], data)
			}
			kept++
		}
	}
	lm.PagesSha256 = h.Sum(nil)
	if kept > 0 {
		lm.PagesZstd = pageEncoder.EncodeAll(buf[:kept*4096], nil)
	}
	return lm, len(lm.Pages) - kept, buf
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
