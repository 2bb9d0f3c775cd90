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
	kickMu       sync.Mutex    // Kick (any goroutine) against Close unmapping run
	runTime      time.Duration // spent in KVM_RUN (RunTime)
	exits        atomic.Uint64 // point.Exits, for Exits
	exitFaults   bool          // the last exit completes with an exception (mayInject)
	driver       Driver
	point        Point
	lastExit     Exit
	inputBacklog []byte
	extraDevices []string
	// stateMSRs: the MSRs a VCPUState carries (those of
	// stateMSRCandidates this KVM reads).
	stateMSRs  []uint32
	bounce     *bounce.Engine
	bounceDevs []bounceDevice // by tag slot (AddBounceDevice)
	virtioArgs []string       // virtio_mmio.device= options for LoadLinux
	virtio     []*virtio.MMIO // the virtio transports, in the order added

	stats Stats
}

// New creates a VM with guest memory, one vCPU with the explicit CPUID
// table, and the legacy devices on the port bus. The guest image is loaded
// with LoadLinux or LoadBare, and started with Run.
func New(cfg Config) (vm *VM, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
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
	if cfg.Driver == nil {
		cfg.Driver = NewLiveDriver(cfg.ConsoleInput)
		v.cfg.Driver = cfg.Driver
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
	spec.Cmdline = linuxCmdline(v.withVirtio(spec.Cmdline), v.cpuid)
	v.cmdline = spec.Cmdline
	st, err := LoadLinux(v.mem, spec)
	if err != nil {
		return err
	}
	return v.SetState(st)
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
	v.kickMu.Lock() // a late Kick must not write to the unmapped page
	if v.run != nil {
		unix.Munmap(v.run)
		v.run = nil
	}
	v.kickMu.Unlock()
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
	v.kickMu.Lock()
	defer v.kickMu.Unlock()
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
