package vmm

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// VM is a single-vCPU KVM virtual machine with userspace devices.
type VM struct {
	cfg   Config
	clock devices.Clock
	start time.Time

	sysFd, vmFd int
	cpu         VCPU // the port to the vCPU (New: KVM's)
	mem         *Memory
	cpuid       CPUID
	cmdline     string
	now         func() time.Time // the host's time, for the run's own accounting

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
	kickMu       sync.Mutex    // Kick (any goroutine) against Close releasing cpu
	runTime      time.Duration // spent in KVM_RUN (RunTime)
	exits        atomic.Uint64 // point.Exits, for Exits
	exitFaults   bool          // the last exit completes with an exception (mayInject)
	driver       Driver
	point        Point
	lastExit     Exit
	inputBacklog []byte
	extraDevices []string
	bounce       *bounce.Engine
	bounceDevs   []bounceDevice  // by tag slot (AddBounceDevice)
	virtioArgs   []string        // virtio_mmio.device= options for LoadLinux
	virtio       []*virtio.MMIO  // the virtio transports, in the order added
	virtioDevs   []virtio.Device // their device models, in the same order

	stats Stats
}

// New creates a VM with guest memory, one vCPU with the explicit CPUID
// table, and the legacy devices on the port bus. The guest image is loaded
// with LoadLinux or LoadBare, and started with Run.
func New(cfg Config) (vm *VM, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	v := newVM(cfg)
	defer func() {
		if err != nil {
			v.Close()
		}
	}()

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
	cpu, err := newKVMVCPU(v.sysFd, v.vmFd)
	if err != nil {
		return nil, err
	}
	v.cpu = cpu

	supported := kvm.CPUID{Nent: 256, Entries: make([]kvm.CPUIDEntry2, 256)}
	if err := kvm.GetSupportedCPUID(uintptr(v.sysFd), &supported); err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	if v.cpuid, err = BuildCPUID(fromKVMCPUID(supported.Entries[:supported.Nent])); err != nil {
		return nil, err
	}
	if err := kvm.SetCPUID2(uintptr(cpu.fd), &kvm.CPUID{Nent: uint32(len(v.cpuid)), Entries: kvmCPUID(v.cpuid)}); err != nil {
		return nil, fmt.Errorf("KVM_SET_CPUID2: %w", err)
	}
	cpu.stateMSRs = probeStateMSRs(cpu.fd)

	if err := v.attachDevices(v.epoch()); err != nil {
		return nil, err
	}
	return v, nil
}

// NewWithVCPU creates a VM on a vCPU other than KVM's and on mem, which
// must hold cfg.MemoryBytes: the real run loop and devices over a guest
// that cpu plays or models (package vmmtest), without /dev/kvm. The VM
// owns cpu and mem from then on (Close closes them). It has no CPUID
// table: a guest's CPUID instruction is cpu's business.
func NewWithVCPU(cfg Config, cpu VCPU, mem *Memory) (*VM, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cpu == nil || mem == nil || mem.Size() != cfg.MemoryBytes {
		return nil, fmt.Errorf("%w: a vCPU and %d bytes of memory are needed", ErrInvalidConfig, cfg.MemoryBytes)
	}
	v := newVM(cfg)
	v.cpu, v.mem = cpu, mem
	if err := v.attachDevices(v.epoch()); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// newVM is the VM of cfg (already defaulted) before it has a vCPU,
// memory or devices.
func newVM(cfg Config) *VM {
	v := &VM{cfg: cfg, sysFd: -1, vmFd: -1, start: time.Now(), now: cfg.HostTime}
	if v.now == nil {
		v.now = time.Now
	}
	v.clock = cfg.Clock
	if v.clock == nil {
		v.clock = &HostClock{start: v.start}
	}
	if cfg.Driver == nil {
		v.cfg.Driver = NewLiveDriver(cfg.ConsoleInput)
	}
	return v
}

// epoch is the guest's wall-clock time at its start (the CMOS clock).
func (v *VM) epoch() time.Time {
	if v.cfg.Epoch.IsZero() {
		return v.start
	}
	return v.cfg.Epoch
}

// Memory returns guest RAM.
func (v *VM) Memory() *Memory { return v.mem }

// CPUID returns the table the vCPU runs with.
func (v *VM) CPUID() CPUID { return v.cpuid }

// Clock returns the clock the devices read.
func (v machine) Clock() devices.Clock { return v.clock }

// LoadLinux loads a kernel and sets the vCPU up to enter it. Unless the
// command line already has a clearcpuid= option, it gets one naming the
// features this host's KVM may show the guest although the CPUID table
// hides them (see LinuxClearCPUID).
func (v *VM) LoadLinux(spec LinuxSpec) error {
	spec.Cmdline = linuxCmdline(v.withVirtio(spec.Cmdline), v.cpuid)
	v.cmdline = spec.Cmdline
	st, err := loadLinux(v.mem, spec)
	if err != nil {
		return err
	}
	return v.setState(st)
}

// withVirtio adds the virtio devices' virtio_mmio.device= options to a
// command line that has none.
func (v *VM) withVirtio(cmdline string) string {
	if len(v.virtioArgs) == 0 || strings.Contains(cmdline, "virtio_mmio.device=") {
		return cmdline
	}
	return strings.TrimSpace(cmdline + " " + strings.Join(v.virtioArgs, " "))
}

// Cmdline is the kernel command line LoadLinux passed, options it added
// included.
func (v *VM) Cmdline() string { return v.cmdline }

// LoadBare loads a flat test-guest image and sets the vCPU up to enter it.
func (v *VM) LoadBare(image []byte) error {
	st, err := loadBare(v.mem, image)
	if err != nil {
		return err
	}
	return v.setState(st)
}

// setState sets the vCPU's registers.
func (v *VM) setState(st bootState) error {
	if err := v.cpu.SetSregs(st.Sregs); err != nil {
		return err
	}
	return v.cpu.SetRegs(st.Regs)
}

// Regs reads the vCPU's general registers.
func (v *VM) Regs() (Regs, error) { return v.cpu.Regs() }

// Sregs reads the vCPU's special registers.
func (v *VM) Sregs() (Sregs, error) { return v.cpu.Sregs() }

// Close releases the vCPU, the VM's file descriptors and memory.
func (v *VM) Close() error {
	v.kickMu.Lock() // a late Kick must not write to the unmapped page
	if v.cpu != nil {
		v.cpu.Close()
		v.cpu = nil
	}
	v.kickMu.Unlock()
	for _, fd := range []*int{&v.vmFd, &v.sysFd} {
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
	v.kickMu.Lock()
	defer v.kickMu.Unlock()
	if v.cpu == nil {
		return
	}
	v.cpu.SetImmediateExit(true)
	if tid := v.tid.Load(); tid != 0 {
		// SIGURG: the Go runtime already handles it (async preemption) and
		// ignores one it did not ask for, so no handler is needed here.
		unix.Tgkill(os.Getpid(), int(tid), unix.SIGURG)
	}
}

// hostNow is the VMM's own reading of time for scheduling timers. It never
// reaches a device, so it is not a guest input.
func (v *VM) hostNow() int64 { return int64(time.Since(v.start)) }

// UserMode reports whether the vCPU is in user mode (CPL 3).
func (v *VM) UserMode() (bool, error) {
	s, err := v.Sregs()
	if err != nil {
		return false, err
	}
	return s.CS.Selector&3 == 3, nil
}

// Exits is how many synchronous exits the run has made so far. Unlike
// Point, any goroutine may call it (progress reports).
func (v *VM) Exits() uint64 { return v.exits.Load() }

// Point returns where the run is.
func (v *VM) Point() Point { return v.point }
