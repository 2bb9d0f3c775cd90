package vmm

import (
	"encoding/binary"
	"fmt"
)

// Exit reasons from struct kvm_run (include/uapi/linux/kvm.h).
const (
	exitUnknown       = 0
	exitException     = 1
	exitIO            = 2
	exitDebug         = 4
	exitHLT           = 5
	exitMMIO          = 6
	exitIRQWindowOpen = 7
	exitShutdown      = 8
	exitFailEntry     = 9
	exitIntr          = 10
	exitInternalError = 17
	exitSystemEvent   = 24
	exitX86RDMSR      = 29
	exitX86WRMSR      = 30
)

// ExitKind classifies a decoded exit.
type ExitKind int

const (
	ExitIOIn ExitKind = iota + 1
	ExitIOOut
	ExitMMIORead
	ExitMMIOWrite
	ExitHLT
	ExitIRQWindow
	ExitShutdown
	ExitInternalError
	ExitFailEntry
	ExitDebug
	ExitIntr
	ExitRDMSR
	ExitWRMSR
	ExitOther
)

var exitKindNames = map[ExitKind]string{
	ExitIOIn: "io-in", ExitIOOut: "io-out", ExitMMIORead: "mmio-read", ExitMMIOWrite: "mmio-write",
	ExitHLT: "hlt", ExitIRQWindow: "irq-window", ExitShutdown: "shutdown", ExitInternalError: "internal-error",
	ExitFailEntry: "fail-entry", ExitDebug: "debug", ExitIntr: "intr", ExitRDMSR: "rdmsr", ExitWRMSR: "wrmsr", ExitOther: "other",
}

func (k ExitKind) String() string {
	if s, ok := exitKindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("exit(%d)", int(k))
}

// Exit is a decoded KVM exit. Data aliases the kvm_run page for I/O and
// MMIO exits: for reads the handler fills it, for writes it holds the value.
type Exit struct {
	Kind   ExitKind
	Reason uint32 // raw kvm_run.exit_reason

	Port  uint16 // I/O
	Size  int    // I/O access width in bytes
	Count int    // I/O repeat count (string instructions)
	Addr  uint64 // MMIO guest physical address
	Data  []byte // I/O: Size*Count bytes; MMIO: len bytes

	Suberror     uint32   // internal error
	InternalData []uint64 // internal error payload
	HardwareCode uint64   // fail-entry

	MSR      uint32 // RDMSR/WRMSR: the MSR's index
	MSRData  []byte // RDMSR: 8 bytes for the handler to fill; WRMSR: the value
	MSRError []byte // RDMSR/WRMSR: 1 byte; the handler sets 1 to inject #GP
}

// decodeExit reads the exit union of a kvm_run mapping. It never indexes
// outside run: offsets and lengths come from the kernel but are checked.
func decodeExit(run []byte) (Exit, error) {
	h := runHeader(run)
	u := run[kvmRunExitOffset:]
	e := Exit{Reason: h.ExitReason}
	switch h.ExitReason {
	case exitIO:
		dir := u[0]
		e.Size = int(u[1])
		e.Port = binary.LittleEndian.Uint16(u[2:])
		e.Count = int(binary.LittleEndian.Uint32(u[4:]))
		off := binary.LittleEndian.Uint64(u[8:])
		if e.Size != 1 && e.Size != 2 && e.Size != 4 {
			return e, fmt.Errorf("I/O exit with access size %d", e.Size)
		}
		data, ok := pioData(run, off, e.Size*e.Count)
		if !ok || e.Count == 0 {
			return e, fmt.Errorf("I/O exit with data offset %#x count %d outside kvm_run", off, e.Count)
		}
		e.Data = data
		e.Kind = ExitIOIn
		if dir == 1 {
			e.Kind = ExitIOOut
		}
	case exitMMIO:
		e.Addr = binary.LittleEndian.Uint64(u[0:])
		n := binary.LittleEndian.Uint32(u[16:])
		if n == 0 || n > 8 {
			return e, fmt.Errorf("MMIO exit at %#x with length %d", e.Addr, n)
		}
		e.Data = u[8 : 8+n]
		e.Kind = ExitMMIORead
		if u[20] != 0 {
			e.Kind = ExitMMIOWrite
		}
	case exitHLT:
		e.Kind = ExitHLT
	case exitIRQWindowOpen:
		e.Kind = ExitIRQWindow
	case exitShutdown:
		e.Kind = ExitShutdown
	case exitInternalError:
		e.Kind = ExitInternalError
		e.Suberror = binary.LittleEndian.Uint32(u[0:])
		n := binary.LittleEndian.Uint32(u[4:])
		if n > 16 {
			n = 16
		}
		for i := uint32(0); i < n; i++ {
			e.InternalData = append(e.InternalData, binary.LittleEndian.Uint64(u[8+8*i:]))
		}
	case exitFailEntry:
		e.Kind = ExitFailEntry
		e.HardwareCode = binary.LittleEndian.Uint64(u[0:])
	case exitDebug:
		e.Kind = ExitDebug
	case exitIntr:
		e.Kind = ExitIntr
	case exitX86RDMSR, exitX86WRMSR:
		// struct { u8 error; u8 pad[7]; u32 reason; u32 index; u64 data; }
		e.Kind = ExitRDMSR
		if h.ExitReason == exitX86WRMSR {
			e.Kind = ExitWRMSR
		}
		e.MSRError = u[0:1]
		e.MSR = binary.LittleEndian.Uint32(u[12:])
		e.MSRData = u[16:24]
	default:
		e.Kind = ExitOther
	}
	return e, nil
}
