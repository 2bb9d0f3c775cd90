package replay

import (
	"crypto/sha256"
	"time"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// Guest describes what a recorded VM was loaded with, for its log header.
type Guest struct {
	Bare       bool   // a flat bare-guest image rather than Linux
	Kernel     []byte // the vmlinux or bare image, as loaded (rdtsc sites patched)
	Initrd     []byte // Linux only
	RDTSCSites int    // patched rdtsc/rdtscp sites
}

// HeaderVM is what a log header pins of a VM's configuration (*vmm.VM
// is one).
type HeaderVM interface {
	CPUID() vmm.CPUID
	MemoryBytes() uint64
	ExtraDevices() []string
	Cmdline() string
}

// NewHeader returns the log header that pins vm's configuration: CPUID
// table, memory, the guest's hashes and command line, the RTC epoch, and
// whether reads are verified. A replay compares it with its own
// (logio.CompareHeaders) before running.
func NewHeader(vm HeaderVM, g Guest, epoch time.Time, verify bool) *logpb.Header {
	cpuid := vm.CPUID().Hash()
	h := &logpb.Header{
		Version:       logio.FormatVersion,
		CpuidSha256:   cpuid[:],
		MemoryBytes:   vm.MemoryBytes(),
		EpochUnixNano: epoch.UnixNano(),
		Verify:        verify,
		RdtscSites:    uint32(g.RDTSCSites),
		Devices:       vm.ExtraDevices(),
		Landmarks:     StrategyStateTransfer,
		Fingerprint:   vmm.FingerprintScheme,
	}
	sum := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		s := sha256.Sum256(b)
		return s[:]
	}
	if g.Bare {
		h.ImageSha256 = sum(g.Kernel)
	} else {
		h.KernelSha256, h.InitrdSha256, h.Cmdline = sum(g.Kernel), sum(g.Initrd), vm.Cmdline()
	}
	return h
}
