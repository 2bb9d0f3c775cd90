package vmm

import (
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
)

// Machine is what a Driver sees of the VM it drives: the point the run
// stands at, the vCPU's registers and state, guest memory by page, the
// devices' clock and timer, and delivery of asynchronous events. The run
// loop hands its Driver the VM's own (VM.Machine), so that these methods
// stay off *VM's method set, which is the embedder's; the replay
// package's tests drive its recorder and replayer with a machine made of
// plain values, without KVM.
//
// Every method is called on the vCPU thread, between two entries into the
// guest, except Kick, which any goroutine may call.
type Machine interface {
	// Point is where the run stands.
	Point() Point
	// Regs are the vCPU's general registers.
	Regs() (Regs, error)
	// Fingerprint hashes the whole machine state (FingerprintScheme).
	Fingerprint() ([32]byte, error)

	// CaptureVCPUState and ApplyVCPUState save and load the whole vCPU
	// state (a state-transfer landmark).
	CaptureVCPUState() (VCPUState, error)
	ApplyVCPUState(VCPUState) error
	// DirtyPages lists the page frames written since the previous call and
	// resets the log (Config.TrackDirty).
	DirtyPages() ([]uint32, error)
	// PageContents returns a copy of one 4 KiB page of guest memory;
	// LoadPage writes one (nil data: zeros).
	PageContents(pfn uint32) ([]byte, error)
	LoadPage(pfn uint32, data []byte) error
	// MemoryBytes is the size of guest memory.
	MemoryBytes() uint64

	// DeliverAsync hands a batch of asynchronous events to the devices.
	DeliverAsync(Async)
	// InterruptPending reports whether the interrupt controller holds a
	// request the guest has not taken.
	InterruptPending() bool
	// TimerDeadline is when, in Clock time, the PIT next raises IRQ0 (ok
	// false: it will not).
	TimerDeadline() (deadline int64, ok bool)
	// Clock is the devices' time source.
	Clock() devices.Clock
	// Bounce is the DMA bounce engine, nil without a DMA device. Its
	// mode is the driver's to set at Start: a recording gates the
	// guest's writes (SetGate); a replay puts it in replay mode
	// (SetReplay; SetReplayWrites if the Machine is a WriteReplayer),
	// and SetLive when the replay goes live. A LiveDriver leaves it live.
	Bounce() *bounce.Engine
	// Kick makes the vCPU leave the guest soon (a Kicked point).
	Kick()
	// LastExit describes the last synchronous exit, for error messages.
	LastExit() string
	// RunTime is how long the vCPU has spent inside the guest (in
	// KVM_RUN) since the run began: the guest's share of the time, which
	// the live driver uses to make sure the guest gets some of it between
	// two timer interrupts (LiveDriver.Deliver).
	RunTime() time.Duration
}

// machine is the VM as its Driver sees it: the replay plumbing (pages,
// vCPU state, asynchronous delivery) kept off *VM's own method set. It
// embeds *VM for Point, Regs, Fingerprint and Kick. It is one pointer, so
// making a Machine of it does not allocate.
type machine struct{ *VM }

var _ Machine = machine{}

// Machine returns the VM as a Driver sees it, for code that drives or
// inspects a VM outside a Driver's calls (snapshots, FT's state transfer,
// tests). It also implements WriteReplayer and PageCopier, and it carries
// the VM's own methods (Run, Exits, Close...), so an interface that adds
// those to Machine, like ft.Machine, is satisfied by a type assertion.
func (v *VM) Machine() Machine { return machine{v} }

// RunTime implements Machine.
func (v machine) RunTime() time.Duration { return v.runTime }

// InterruptPending implements Machine.
func (v machine) InterruptPending() bool { return v.PIC.Pending() }

// TimerDeadline implements Machine.
func (v machine) TimerDeadline() (int64, bool) { return v.PIT.NextDeadline() }

// MemoryBytes is the size of guest memory (Spec.MemoryBytes); it implements Machine.
func (v *VM) MemoryBytes() uint64 { return v.mem.Size() }

// WriteReplayer is an optional capability of a Machine being replayed:
// the device writes it performs itself, on its own copy of the device
// (a disk added with DiskOptions.OwnCopy, FT's non-shared disk mode),
// while every other input comes from the log. A replayer hands it to the
// bounce engine (bounce.Engine.SetReplayWrites); a Machine without it
// performs none.
type WriteReplayer interface {
	ReplayWrites(req bounce.Request) bool
}

var _ WriteReplayer = machine{}
