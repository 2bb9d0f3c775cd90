package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"sync/atomic"
	"time"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/tscpatch"
)

// Config describes a VM. The zero value of every optional field is a
// sensible default.
type Config struct {
	// MemoryBytes is the guest RAM size: a multiple of 4 KiB, at least
	// 2 MiB, at most MaxMemory.
	MemoryBytes uint64
	// Console receives what the guest writes to COM1. Default: io.Discard.
	Console io.Writer
	// ConsoleInput, if set, is read on its own goroutine and fed to COM1's
	// receiver at vCPU exits.
	ConsoleInput io.Reader
	// Clock is the only time source of the device models. Default: a
	// HostClock started when the VM is created.
	Clock devices.Clock
	// Epoch is the wall-clock time the RTC shows when Clock reads zero.
	// Default: the host's time at creation.
	Epoch time.Time
	// TrackDirty turns on KVM's dirty-page log for guest RAM (recorders
	// need it for landmarks).
	TrackDirty bool
	// Driver supplies the run's nondeterministic inputs. Default: a
	// LiveDriver reading ConsoleInput.
	Driver Driver
	// TSCSites, if set, are the guest's rdtsc/rdtscp instructions patched
	// to trapping OUTs (see package tscpatch): an OUT to their ports
	// from a listed site reads the Driver's TSC. Nil: those ports are
	// ordinary unassigned ports.
	TSCSites *tscpatch.SiteTable
	// ExitTrace, if set, receives one line per synchronous exit and per
	// injection: the point, what happened, RIP and the general registers.
	// Two runs that should be identical (a recording and its replay) can
	// be compared line by line to find where they part (ftvm --trace).
	ExitTrace io.Writer
	// TraceMemory adds to each ExitTrace line a CRC-32C of guest memory
	// (page-table Accessed/Dirty bits left out, as in HashPages). It reads
	// all of guest memory at every exit: a diagnostic for finding the first
	// exit at which two runs' memory differs, slow on large guests.
	TraceMemory bool
	// TraceMemoryFrom skips the memory CRC before this many exits.
	TraceMemoryFrom uint64
}

func (c *Config) validate() error {
	if c.MemoryBytes < 2<<20 || c.MemoryBytes > MaxMemory || c.MemoryBytes%pageSize != 0 {
		return fmt.Errorf("memory size %d bytes: must be a multiple of 4 KiB between 2 MiB and %d MiB", c.MemoryBytes, MaxMemory>>20)
	}
	return nil
}

// StopReason says why a run ended without error.
type StopReason int

const (
	// StopExitPort: the guest wrote its exit status to ExitPort.
	StopExitPort StopReason = iota + 1
	// StopPowerOff: the guest halted with interrupts disabled, which is how
	// Linux without ACPI ends "poweroff" (and how a bare guest may end).
	StopPowerOff
	// StopReset: the guest asked for a reset (i8042 reset line).
	StopReset
)

func (r StopReason) String() string {
	switch r {
	case StopExitPort:
		return "exit port"
	case StopPowerOff:
		return "power off"
	case StopReset:
		return "reset"
	}
	return fmt.Sprintf("StopReason(%d)", int(r))
}

// Stats counts what happened during a run.
type Stats struct {
	Exits          [ExitOther + 1]uint64 // by ExitKind
	Kicks          uint64                // KVM_RUN returns with EINTR
	Windows        uint64                // interrupt-window exits (Window points, not counted in Exits)
	Interrupts     uint64                // vectors injected with KVM_INTERRUPT
	UnhandledPorts uint64                // accesses to ports with no device
	TSCReads       uint64                // trapped rdtsc/rdtscp
}

// SyncExits is the number of synchronous exits (every exit but kicks).
func (s *Stats) SyncExits() uint64 {
	var n uint64
	for _, c := range s.Exits {
		n += c
	}
	return n
}

// Result is how a run ended.
type Result struct {
	Reason   StopReason
	Status   int // the byte written to ExitPort (StopExitPort only)
	Stats    Stats
	Duration time.Duration
}

// VM is a single-vCPU KVM virtual machine with userspace devices.
type VM struct {
	cfg   Config
	clock devices.Clock
	start time.Time

	sysFd, vmFd, vcpuFd int
	run                 []byte
	mem                 *Memory
	cpuid               CPUID
	cmdline             string

	PIO  *Bus
	MMIO *Bus

	PIC   *devices.PIC
	PIT   *devices.PIT
	UART  *devices.UART
	CMOS  *devices.CMOS
	I8042 *devices.I8042

	// Set by devices during an exit, examined after it.
	resetRequested bool
	exitStatus     int
	exitRequested  bool

	// The kick, the driver, and where the run is.
	tid          atomic.Int32
	driver       Driver
	point        Point
	lastExit     Exit
	inputBacklog []byte
	extraDevices []string
	// stateMSRs: the MSRs a VCPUState carries (those of
	// stateMSRCandidates this KVM reads).
	stateMSRs      []uint32
	bounce         *bounce.Engine
	bounceComplete func(bounce.Completion)

	stats Stats
}

// New creates a VM with guest memory, one vCPU with the explicit CPUID
// table, and the legacy devices on the port bus. The guest image is loaded
// with LoadLinux or LoadBare, and started with Run.
func New(cfg Config) (vm *VM, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	v := &VM{cfg: cfg, sysFd: -1, vmFd: -1, vcpuFd: -1, start: time.Now()}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	v.clock = cfg.Clock
	if v.clock == nil {
		v.clock = &HostClock{start: v.start}
	}
	epoch := cfg.Epoch
	if epoch.IsZero() {
		epoch = v.start
	}

	v.sysFd, err = unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/kvm: %w (is KVM available, and are you root or in the kvm group?)", err)
	}
	if ver, err := kvm.GetAPIVersion(uintptr(v.sysFd)); err != nil || ver != 12 {
		return nil, fmt.Errorf("KVM API version %d (%v), want 12", ver, err)
	}
	fd, err := kvm.CreateVM(uintptr(v.sysFd))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	v.vmFd = int(fd)
	if err := kvm.SetTSSAddr(uintptr(v.vmFd), tssAddr); err != nil {
		return nil, fmt.Errorf("KVM_SET_TSS_ADDR: %w", err)
	}
	if err := setIdentityMapAddr(v.vmFd, identityMapAddr); err != nil {
		return nil, fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR: %w", err)
	}
	if v.mem, err = NewMemory(cfg.MemoryBytes); err != nil {
		return nil, err
	}
	var flags uint32
	if cfg.TrackDirty {
		flags |= memLogDirtyPages
	}
	if err := setUserMemoryRegion(v.vmFd, 0, 0, v.mem.Bytes(), flags); err != nil {
		return nil, fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	if err := trapMSRs(v.vmFd, timeMSRs); err != nil {
		return nil, fmt.Errorf("routing the time MSRs to the VMM: %w", err)
	}
	fd, err = kvm.CreateVCPU(uintptr(v.vmFd), 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	v.vcpuFd = int(fd)
	size, err := kvm.GetVCPUMMmapSize(uintptr(v.sysFd))
	if err != nil || size < pageSize {
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %d, %v", size, err)
	}
	v.run, err = unix.Mmap(v.vcpuFd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping kvm_run: %w", err)
	}

	supported := kvm.CPUID{Nent: 256, Entries: make([]kvm.CPUIDEntry2, 256)}
	if err := kvm.GetSupportedCPUID(uintptr(v.sysFd), &supported); err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	if v.cpuid, err = BuildCPUID(supported.Entries[:supported.Nent]); err != nil {
		return nil, err
	}
	if err := kvm.SetCPUID2(uintptr(v.vcpuFd), &kvm.CPUID{Nent: uint32(len(v.cpuid)), Entries: v.cpuid}); err != nil {
		return nil, fmt.Errorf("KVM_SET_CPUID2: %w", err)
	}
	v.stateMSRs = probeStateMSRs(v.vcpuFd)

	if err := v.attachDevices(epoch); err != nil {
		return nil, err
	}
	return v, nil
}

// sink is a port that ignores writes and reads as zero (POST code port 0x80
// used by Linux as an I/O delay).
type sink struct{}

func (sink) Read(_ uint64, d []byte) { clear(d) }
func (sink) Write(uint64, []byte)    {}

// exitPort latches the status byte a guest writes to ExitPort.
type exitPort struct{ v *VM }

func (e exitPort) Read(_ uint64, d []byte) { clear(d) }
func (e exitPort) Write(_ uint64, d []byte) {
	e.v.exitStatus = int(d[0])
	e.v.exitRequested = true
}

func (v *VM) attachDevices(epoch time.Time) error {
	v.PIO = NewBus("pio")
	v.MMIO = NewBus("mmio")
	v.PIC = devices.NewPIC()
	v.PIT = devices.NewPIT(v.clock, v.PIC)
	v.UART = devices.NewUART(v.PIC, 4, v.cfg.Console)
	v.CMOS = devices.NewCMOS(v.clock, epoch)
	v.I8042 = devices.NewI8042(func() { v.resetRequested = true })
	for _, r := range []struct {
		name       string
		base, size uint64
		dev        devices.Device
	}{
		{"pic-master", 0x20, 2, v.PIC.Master()},
		{"pit", 0x40, 4, v.PIT.Device()},
		{"i8042-data", 0x60, 1, v.I8042.DataPort()},
		{"port61", 0x61, 1, v.PIT.Port61()},
		{"i8042-cmd", 0x64, 1, v.I8042.CommandPort()},
		{"cmos", 0x70, 2, v.CMOS},
		{"post", 0x80, 1, sink{}},
		{"pic-slave", 0xA0, 2, v.PIC.Slave()},
		{"exit", ExitPort, 1, exitPort{v}},
		{"com1", 0x3F8, 8, v.UART},
		{"elcr", 0x4D0, 2, v.PIC.ELCR()},
	} {
		if err := v.PIO.Register(r.name, r.base, r.size, r.dev); err != nil {
			return err
		}
	}
	return nil
}

// Memory returns guest RAM.
func (v *VM) Memory() *Memory { return v.mem }

// CPUID returns the table the vCPU runs with.
func (v *VM) CPUID() CPUID { return v.cpuid }

// Clock returns the clock the devices read.
func (v *VM) Clock() devices.Clock { return v.clock }

// LoadLinux loads a kernel and sets the vCPU up to enter it. Unless the
// command line already has a clearcpuid= option, it gets one naming the
// features this host's KVM may show the guest although the CPUID table
// hides them (see LinuxClearCPUID).
func (v *VM) LoadLinux(spec LinuxSpec) error {
	spec.Cmdline = linuxCmdline(spec.Cmdline, v.cpuid)
	v.cmdline = spec.Cmdline
	st, err := LoadLinux(v.mem, spec)
	if err != nil {
		return err
	}
	return v.SetState(st)
}

// Cmdline is the kernel command line LoadLinux passed, options it added
// included.
func (v *VM) Cmdline() string { return v.cmdline }

// LoadBare loads a flat test-guest image and sets the vCPU up to enter it.
func (v *VM) LoadBare(image []byte) error {
	st, err := LoadBare(v.mem, image)
	if err != nil {
		return err
	}
	return v.SetState(st)
}

// SetState sets the vCPU's registers.
func (v *VM) SetState(st BootState) error {
	if err := kvm.SetSregs(uintptr(v.vcpuFd), &st.Sregs); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	if err := kvm.SetRegs(uintptr(v.vcpuFd), &st.Regs); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// Regs reads the vCPU's general registers.
func (v *VM) Regs() (Regs, error) {
	r, err := kvm.GetRegs(uintptr(v.vcpuFd))
	if err != nil {
		return Regs{}, fmt.Errorf("KVM_GET_REGS: %w", err)
	}
	return *r, nil
}

// Sregs reads the vCPU's special registers.
func (v *VM) Sregs() (Sregs, error) {
	s, err := kvm.GetSregs(uintptr(v.vcpuFd))
	if err != nil {
		return Sregs{}, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	return *s, nil
}

// Close releases the VM's file descriptors and memory.
func (v *VM) Close() error {
	if v.run != nil {
		unix.Munmap(v.run)
		v.run = nil
	}
	for _, fd := range []*int{&v.vcpuFd, &v.vmFd, &v.sysFd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	if v.mem != nil {
		v.mem.Close()
		v.mem = nil
	}
	return nil
}

// Kick makes the vCPU leave the guest at the next instruction boundary:
// immediate_exit covers the window before KVM_RUN is entered, the signal
// the time inside it. Safe from any goroutine.
func (v *VM) Kick() {
	if v.run == nil {
		return
	}
	setImmediateExit(v.run, 1)
	if tid := v.tid.Load(); tid != 0 {
		// SIGURG: the Go runtime already handles it (async preemption) and
		// ignores one it did not ask for, so no handler is needed here.
		unix.Tgkill(os.Getpid(), int(tid), unix.SIGURG)
	}
}

// hostNow is the VMM's own reading of time for scheduling timers. It never
// reaches a device, so it is not a guest input.
func (v *VM) hostNow() int64 { return int64(time.Since(v.start)) }

// DeliverAsync hands asynchronous events to the devices. Drivers call it
// from Deliver, on the vCPU thread.
func (v *VM) DeliverAsync(a Async) {
	if a.Timer {
		v.PIT.Update()
	}
	if len(a.Input) > 0 {
		v.inputBacklog = append(v.inputBacklog, a.Input...)
	}
	v.offerInput()
	for _, c := range a.DMA {
		if v.bounce != nil {
			v.bounce.Delivered(c.Tag)
			v.bounceComplete(c)
		}
	}
}

// AttachBounce connects a device's bounce engine to the run: its
// completions are delivered, on the vCPU thread at delivery points, to
// complete. One engine per VM.
func (v *VM) AttachBounce(e *bounce.Engine, complete func(bounce.Completion)) error {
	if v.bounce != nil {
		return fmt.Errorf("a bounce engine is already attached")
	}
	v.bounce, v.bounceComplete = e, complete
	return nil
}

// Bounce returns the attached bounce engine, or nil.
func (v *VM) Bounce() *bounce.Engine { return v.bounce }

// DMABase is where AddDMATest maps the DMA test device; DMAIRQ its
// interrupt line.
const (
	DMABase = MMIOBase + 0x10000
	DMAIRQ  = 5
)

// AddDMATest maps the DMA test device (devices.DMATest) at DMABase on IRQ
// 5, with backend filling its bounce buffers.
func (v *VM) AddDMATest(backend bounce.Backend) (*devices.DMATest, error) {
	e := bounce.NewEngine(backend)
	d := devices.NewDMATest(e, func(high bool) { v.PIC.SetIRQ(DMAIRQ, high) }, func(addr uint64, n int) ([]byte, bool) {
		if n < 0 || addr >= v.mem.Size() || uint64(n) > v.mem.Size()-addr {
			return nil, false
		}
		b, err := v.mem.Slice(GuestAddress(addr), uint64(n))
		return b, err == nil
	})
	if err := v.MMIO.Register("dma-test", DMABase, 0x1000, d); err != nil {
		return nil, err
	}
	if err := v.AttachBounce(e, d.Complete); err != nil {
		return nil, err
	}
	v.extraDevices = append(v.extraDevices, "dma-test")
	return d, nil
}

// ExtraDevices names the devices added beyond the standard PC set (a log
// header pins them: a replay needs the same devices).
func (v *VM) ExtraDevices() []string {
	return append([]string(nil), v.extraDevices...)
}

// offerInput gives COM1 what it will take of the console backlog. It runs
// only at exits and deliveries, which replay reproduces, never at other
// points between exits.
func (v *VM) offerInput() {
	if len(v.inputBacklog) > 0 {
		n := v.UART.Input(v.inputBacklog)
		v.inputBacklog = v.inputBacklog[n:]
	}
}

// timeMSRs are the MSRs through which a guest can read time or program
// timers: KVM's MSR filter sends every access to them to the VMM
// (timeMSR), so that a recording logs what they read.
var timeMSRs = []uint32{
	0x10,       // IA32_TSC
	0x3B,       // IA32_TSC_ADJUST
	0xE7, 0xE8, // IA32_MPERF, IA32_APERF
	0x6E0,      // IA32_TSC_DEADLINE
	0x11, 0x12, // KVM's old kvmclock MSRs
	0x4B564D00, 0x4B564D01, // KVM's kvmclock MSRs
}

// timeMSR answers a trapped access to one of timeMSRs. IA32_TSC, MPERF and
// APERF read the driver's TSC (logged by a recorder, replayed from the log);
// the others read 0: this VM has no TSC adjustment, local APIC timer or
// kvmclock. Writes raise #GP: the guest's TSC is the VMM's.
func (v *VM) timeMSR(e Exit) error {
	if e.Kind == ExitWRMSR {
		e.MSRError[0] = 1
		return nil
	}
	var val uint64
	switch e.MSR {
	case 0x10, 0xE7, 0xE8:
		tsc, err := v.driver.TSC(v, v.point)
		if err != nil {
			return err
		}
		val = tsc
		v.stats.TSCReads++
	}
	binary.LittleEndian.PutUint64(e.MSRData, val)
	e.MSRError[0] = 0
	return nil
}

// LastExit describes the most recent synchronous exit (for diagnostics).
func (v *VM) LastExit() string {
	e := v.lastExit
	switch e.Kind {
	case ExitIOIn, ExitIOOut:
		return fmt.Sprintf("%v port %#x", e.Kind, e.Port)
	case ExitMMIORead, ExitMMIOWrite:
		return fmt.Sprintf("%v %#x", e.Kind, e.Addr)
	}
	return e.Kind.String()
}

// traceLine writes one ExitTrace line, if tracing.
func (v *VM) traceLine(what string) {
	if v.cfg.ExitTrace == nil {
		return
	}
	r, err := v.Regs()
	if err != nil {
		fmt.Fprintf(v.cfg.ExitTrace, "%v %s: %v\n", v.point, what, err)
		return
	}
	mem := ""
	if v.cfg.TraceMemory && v.point.Exits >= v.cfg.TraceMemoryFrom {
		crc, err := v.memoryCRC()
		if err != nil {
			mem = " mem=" + err.Error()
		} else {
			mem = fmt.Sprintf(" mem=%08x", crc)
		}
	}
	fmt.Fprintf(v.cfg.ExitTrace, "%v %s rip=%#x rflags=%#x gprs=%x%s\n", v.point, what, r.RIP, r.RFLAGS, GPRs(r), mem)
}

// CancelWindow withdraws a request for an interrupt-window exit (a driver
// that declined a Window point asks again later, with a kick).
func (v *VM) CancelWindow() { runHeader(v.run).RequestInterruptWindow = 0 }

// UserMode reports whether the vCPU is in user mode (CPL 3).
func (v *VM) UserMode() (bool, error) {
	s, err := v.Sregs()
	if err != nil {
		return false, err
	}
	return s.CS.Selector&3 == 3, nil
}

// Point returns where the run is.
func (v *VM) Point() Point { return v.point }

// injectInterrupt hands the PIC's highest-priority request to the vCPU if
// it can take one now, and otherwise asks KVM to exit when it can.
func (v *VM) injectInterrupt() error {
	h := runHeader(v.run)
	if !v.PIC.Pending() {
		h.RequestInterruptWindow = 0
		return nil
	}
	if h.ReadyForInterruptInjection == 0 || h.IfFlag == 0 {
		h.RequestInterruptWindow = 0
		if v.driver.Windows() {
			h.RequestInterruptWindow = 1
		}
		return nil
	}
	vector := v.PIC.Acknowledge()
	if err := injectInterrupt(v.vcpuFd, vector); err != nil {
		return fmt.Errorf("KVM_INTERRUPT vector %#x: %w", vector, err)
	}
	v.stats.Interrupts++
	h.RequestInterruptWindow = 0
	v.traceLine(fmt.Sprintf("inject %#x", vector))
	return v.driver.Injected(v, v.point, vector)
}

// ErrNoWakeup is returned when the guest halts with interrupts enabled but
// no device can ever interrupt it (no timer armed, no console input).
var ErrNoWakeup = errors.New("guest halted with interrupts enabled, but no interrupt source is armed: it would wait forever")

// stopRun is a StopReason or an error, ending Run.
type stopRun struct {
	reason StopReason
	err    error
}

// Run runs the guest until it stops, fails, or ctx is cancelled. It locks
// the calling goroutine to its OS thread for the duration.
func (v *VM) Run(ctx context.Context) (res Result, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	began := time.Now()
	v.driver = v.cfg.Driver
	if v.driver == nil {
		v.driver = NewLiveDriver(v.cfg.ConsoleInput)
	}
	stopWatch := context.AfterFunc(ctx, v.Kick)
	defer stopWatch()
	defer func() {
		res.Stats, res.Duration = v.stats, time.Since(began)
		if derr := v.driver.Stop(v, v.point, res, err); derr != nil && err == nil {
			err = derr
		}
	}()
	if err := v.driver.Start(v); err != nil {
		return Result{}, err
	}
	v.point = Point{Kind: AtExit}
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("run interrupted at %d exits: %w", v.point.Exits, err)
		}
		if v.point.Kind == AtExit {
			v.offerInput()
		}
		delivered, err := v.driver.Deliver(v, v.point)
		if err != nil {
			return Result{}, err
		}
		if v.point.Kind == AtExit || delivered {
			if err := v.injectInterrupt(); err != nil {
				return Result{}, err
			}
		}
		if v.driver.NextEntry() == EntryComplete {
			setImmediateExit(v.run, 1)
		}
		errno := runVCPU(v.vcpuFd)
		switch errno {
		case 0:
		case unix.EINTR:
			setImmediateExit(v.run, 0)
			v.stats.Kicks++
			v.point.Kind = Kicked
			continue
		case unix.EAGAIN:
			continue
		default:
			return Result{}, fmt.Errorf("KVM_RUN: %w", errno)
		}

		exit, err := decodeExit(v.run)
		if err != nil {
			return Result{}, v.guestError("malformed exit", err.Error())
		}
		if exit.Kind == ExitIRQWindow {
			// Not a synchronous exit: where it lands varies from run to run.
			v.stats.Windows++
			v.point.Kind = Window
			v.traceLine("window")
			continue
		}
		v.point = Point{Exits: v.point.Exits + 1, Kind: AtExit}
		v.lastExit = exit
		v.traceLine(v.LastExit())
		v.stats.Exits[exit.Kind]++
		if stop := v.handleExit(ctx, exit); stop != nil {
			if stop.err != nil {
				return Result{}, stop.err
			}
			return Result{Reason: stop.reason, Status: v.exitStatus}, nil
		}
	}
}

// handleExit acts on one synchronous exit. It returns non-nil when the run
// is over.
func (v *VM) handleExit(ctx context.Context, e Exit) *stopRun {
	fail := func(err error) *stopRun { return &stopRun{err: err} }
	switch e.Kind {
	case ExitIOIn, ExitIOOut:
		if e.Kind == ExitIOOut && v.cfg.TSCSites != nil && v.cfg.TSCSites.Reserved(e.Port) {
			return v.trappedTSC(e)
		}
		for i := 0; i < e.Count; i++ {
			v.pio(e.Kind == ExitIOOut, e.Port, e.Data[i*e.Size:(i+1)*e.Size])
		}
		if e.Kind == ExitIOIn {
			if err := v.driver.Read(v, v.point, false, uint64(e.Port), e.Data); err != nil {
				return fail(err)
			}
		}
		switch {
		case v.exitRequested:
			return &stopRun{reason: StopExitPort}
		case v.resetRequested:
			return &stopRun{reason: StopReset}
		}
	case ExitMMIORead, ExitMMIOWrite:
		dev, off, ok := v.MMIO.Lookup(e.Addr)
		if !ok {
			what := "unmapped MMIO read"
			more := fmt.Sprintf("%d bytes at guest physical address %#x (guest RAM ends at %#x)", len(e.Data), e.Addr, v.mem.Size())
			if e.Kind == ExitMMIOWrite {
				what = "unmapped MMIO write"
				more += "; KVM has completed the store, so RIP is the next instruction"
			}
			return fail(v.guestError(what, more))
		}
		if e.Kind == ExitMMIOWrite {
			dev.Write(off, e.Data)
		} else {
			dev.Read(off, e.Data)
			if err := v.driver.Read(v, v.point, true, e.Addr, e.Data); err != nil {
				return fail(err)
			}
		}
	case ExitHLT:
		return v.halt(ctx)
	case ExitIntr:
		// Nothing to do: the loop injects before re-entering.
	case ExitRDMSR, ExitWRMSR:
		if err := v.timeMSR(e); err != nil {
			return fail(err)
		}
	case ExitShutdown:
		return fail(v.guestError("triple fault", "the vCPU shut down (an exception while delivering a double fault)"))
	case ExitInternalError:
		const emulationFailure = 1
		if e.Suberror == emulationFailure {
			return fail(v.guestError("emulation failure", "KVM's instruction emulator cannot execute this instruction"))
		}
		return fail(v.guestError("internal error", fmt.Sprintf("KVM internal error suberror %d data %#x", e.Suberror, e.InternalData)))
	case ExitFailEntry:
		return fail(v.guestError("entry failure", fmt.Sprintf("hardware entry failure reason %#x", e.HardwareCode)))
	case ExitDebug:
		return fail(v.guestError("unexpected debug exit", "the VMM sets no breakpoints and does not single-step"))
	default:
		return fail(v.guestError("unexpected exit", fmt.Sprintf("KVM exit reason %d", e.Reason)))
	}
	return nil
}

func (v *VM) pio(write bool, port uint16, data []byte) {
	dev, off, ok := v.PIO.Lookup(uint64(port))
	if !ok {
		// No device: reads float high, writes vanish, as on a PC's ISA bus.
		v.stats.UnhandledPorts++
		if !write {
			for i := range data {
				data[i] = 0xFF
			}
		}
		return
	}
	if write {
		dev.Write(off, data)
	} else {
		dev.Read(off, data)
	}
}

// halt handles a HLT exit: with interrupts disabled the guest is done;
// otherwise wait, delivering events at this exit, until an interrupt can
// be injected.
func (v *VM) halt(ctx context.Context) *stopRun {
	regs, err := v.Regs()
	if err != nil {
		return &stopRun{err: err}
	}
	if regs.RFLAGS&RFlagsIF == 0 {
		return &stopRun{reason: StopPowerOff}
	}
	for {
		if _, err := v.driver.Deliver(v, v.point); err != nil {
			return &stopRun{err: err}
		}
		if v.PIC.Pending() {
			return nil
		}
		if err := v.driver.Halted(ctx, v, v.point); err != nil {
			if errors.Is(err, ErrNoWakeup) {
				return &stopRun{err: &GuestError{What: "halt", RIP: regs.RIP, More: err.Error()}}
			}
			if ctx.Err() != nil {
				return &stopRun{err: fmt.Errorf("run interrupted while the guest was halted: %w", err)}
			}
			return &stopRun{err: err}
		}
	}
}

// trappedTSC handles an OUT from a patched rdtsc/rdtscp site: it lets KVM
// complete the OUT (immediate_exit: no guest instruction runs), checks that
// it came from a listed site, and loads the TSC value into EDX:EAX (and
// TSC_AUX, always 0, into ECX for rdtscp).
func (v *VM) trappedTSC(e Exit) *stopRun {
	setImmediateExit(v.run, 1)
	errno := runVCPU(v.vcpuFd)
	setImmediateExit(v.run, 0)
	if errno != unix.EINTR {
		return &stopRun{err: fmt.Errorf("completing trapped rdtsc: KVM_RUN returned %v, want EINTR", errno)}
	}
	regs, err := v.Regs()
	if err != nil {
		return &stopRun{err: err}
	}
	sregs, err := v.Sregs()
	if err != nil {
		return &stopRun{err: err}
	}
	gpa, ok := v.translate(sregs, regs.RIP-2)
	if !ok {
		return &stopRun{err: v.guestError("rdtsc trap from unmapped code", "")}
	}
	site, err := v.cfg.TSCSites.Check(e.Port, true, e.Size, gpa)
	if err != nil {
		return &stopRun{err: &GuestError{What: "write to the reserved rdtsc port", RIP: regs.RIP - 2, More: err.Error()}}
	}
	tsc, err := v.driver.TSC(v, v.point)
	if err != nil {
		return &stopRun{err: err}
	}
	regs.RAX = tsc & 0xFFFFFFFF
	regs.RDX = tsc >> 32
	if site.Kind == tscpatch.RDTSCP {
		regs.RCX = 0
	}
	if err := kvm.SetRegs(uintptr(v.vcpuFd), &regs); err != nil {
		return &stopRun{err: fmt.Errorf("setting rdtsc result: %w", err)}
	}
	v.stats.TSCReads++
	return nil
}

// translate maps a linear address to a guest physical one.
func (v *VM) translate(sregs Sregs, linear uint64) (uint64, bool) {
	if sregs.CR0&cr0PG == 0 {
		return linear, true
	}
	t := kvm.Translation{LinearAddress: linear}
	if err := kvm.Translate(uintptr(v.vcpuFd), &t); err != nil || t.Valid == 0 {
		return 0, false
	}
	return t.PhysicalAddress, true
}

// instructionAt returns the guest RIP and up to 15 instruction bytes there.
func (v *VM) instructionAt() (Regs, []byte) {
	regs, err := v.Regs()
	if err != nil {
		return regs, nil
	}
	sregs, err := v.Sregs()
	if err != nil {
		return regs, nil
	}
	gpa, ok := v.translate(sregs, sregs.CS.Base+regs.RIP)
	if !ok {
		return regs, nil
	}
	n := uint64(15)
	if gpa >= v.mem.Size() {
		return regs, nil
	}
	// Do not read across the page: the next page may map elsewhere.
	n = min(n, pageSize-gpa%pageSize, v.mem.Size()-gpa)
	b := make([]byte, n)
	if v.mem.ReadAt(b, GuestAddress(gpa)) != nil {
		return regs, nil
	}
	return regs, b
}

func (v *VM) guestError(what, more string) error {
	regs, b := v.instructionAt()
	return &GuestError{What: what, RIP: regs.RIP, Bytes: b, More: more}
}
