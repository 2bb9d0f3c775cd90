package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/devices/virtio/blk"
	vnet "github.com/ftkvm/ftkvm/devices/virtio/net"
	"golang.org/x/sys/unix"
)

// These tests drive the VM's exit handling and device wiring without KVM:
// a VM with its devices and memory but no file descriptors (every vCPU
// ioctl fails with EBADF) and a kvm_run page that is plain memory.

// kvmRun is the kvm_run page of a VM made by kvmlessVM.
func kvmRun(v *VM) []byte { return v.cpu.(*kvmVCPU).run }

// testClock is a device clock that moves only when a test sets it.
type testClock struct{ now atomic.Int64 }

func (c *testClock) Now() int64 { return c.now.Load() }

// fakeDriver answers TSC reads with tsc and records what the VM reports.
type fakeDriver struct {
	tsc     uint64
	tscErr  error
	readErr error
	windows bool
	reads   []string
}

func (d *fakeDriver) Start(Machine) error                          { return nil }
func (d *fakeDriver) Deliver(Machine, Point) (bool, error)         { return false, nil }
func (d *fakeDriver) Windows() bool                                { return d.windows }
func (d *fakeDriver) Halted(context.Context, Machine, Point) error { return nil }
func (d *fakeDriver) Injected(Machine, Point, uint8) error         { return nil }
func (d *fakeDriver) NextEntry() EntryMode                         { return EntryRun }
func (d *fakeDriver) TSC(Machine, Point) (uint64, error)           { return d.tsc, d.tscErr }
func (d *fakeDriver) Stop(Machine, Point, Result, error) error     { return nil }
func (d *fakeDriver) Read(_ Machine, p Point, mmio bool, addr uint64, data []byte) error {
	kind := "pio"
	if mmio {
		kind = "mmio"
	}
	d.reads = append(d.reads, fmt.Sprintf("%v %s %#x % x", p, kind, addr, data))
	return d.readErr
}

func kvmlessVM(t *testing.T) (*VM, *fakeDriver, *bytes.Buffer) {
	t.Helper()
	mem, err := NewMemory(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() }) // not v.Close: v.run is not a mapping
	console := &bytes.Buffer{}
	d := &fakeDriver{tsc: 0x1122334455667788}
	v := &VM{
		cfg:   Config{Spec: Spec{MemoryBytes: mem.Size()}, Options: Options{Console: console}},
		sysFd: -1, vmFd: -1, cpu: &kvmVCPU{fd: -1, vmFd: -1, run: fakeRun()},
		mem: mem, clock: &testClock{},
		driver: d, point: Point{Exits: 5, Kind: AtExit},
	}
	if err := v.attachDevices(time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	return v, d, console
}

func ioExit(kind ExitKind, port uint16, size int, data ...byte) Exit {
	return Exit{Kind: kind, Port: port, Size: size, Count: len(data) / size, Data: data}
}

func TestHandleExitPortIO(t *testing.T) {
	v, d, console := kvmlessVM(t)
	ctx := context.Background()
	for _, e := range []Exit{
		ioExit(ExitIOOut, 0x3F8, 1, 'h'),
		ioExit(ExitIOOut, 0x3F8, 1, 'i', '!', '\n'), // rep outsb
		ioExit(ExitIOOut, 0x80, 1, 0x12),            // POST code: ignored
		ioExit(ExitIOOut, 0x1234, 2, 1, 2),          // no device
	} {
		if stop := v.handleExit(ctx, e); stop != nil {
			t.Fatalf("%v: stopped: %+v", describeExit(e), stop)
		}
	}
	if console.String() != "hi!\n" {
		t.Errorf("console %q", console.String())
	}
	in := ioExit(ExitIOIn, 0x1234, 2, 0, 0)
	post := ioExit(ExitIOIn, 0x80, 1, 0x55)
	for _, e := range []Exit{in, post} {
		if stop := v.handleExit(ctx, e); stop != nil {
			t.Fatalf("%v: stopped: %+v", describeExit(e), stop)
		}
	}
	if !bytes.Equal(in.Data, []byte{0xFF, 0xFF}) || post.Data[0] != 0 {
		t.Errorf("unassigned port read %x, POST port read %x; want ffff, 00", in.Data, post.Data)
	}
	if v.stats.UnhandledPorts != 2 {
		t.Errorf("UnhandledPorts = %d, want 2", v.stats.UnhandledPorts)
	}
	want := []string{"exit 5 pio 0x1234 ff ff", "exit 5 pio 0x80 00"}
	if strings.Join(d.reads, "|") != strings.Join(want, "|") {
		t.Errorf("driver saw reads %q, want %q", d.reads, want)
	}
	d.readErr = errors.New("verify: differs")
	if stop := v.handleExit(ctx, ioExit(ExitIOIn, 0x3FD, 1, 0)); stop == nil || stop.err != d.readErr {
		t.Errorf("driver read error: %+v", stop)
	}
}

func TestHandleExitStops(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	if stop := v.handleExit(context.Background(), ioExit(ExitIOOut, ExitPort, 1, 7)); stop == nil || stop.reason != StopExitPort || stop.err != nil || v.exitStatus != 7 {
		t.Errorf("exit port: %+v, status %d", stop, v.exitStatus)
	}
	v, _, _ = kvmlessVM(t)
	if stop := v.handleExit(context.Background(), ioExit(ExitIOOut, 0x64, 1, 0xFE)); stop == nil || stop.reason != StopReset || stop.err != nil {
		t.Errorf("i8042 reset: %+v", stop)
	}
}

func TestHandleExitMMIO(t *testing.T) {
	v, d, _ := kvmlessVM(t)
	dev := &recorder{}
	if err := v.MMIO.Register("rec", MMIOBase, 0x1000, dev); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if stop := v.handleExit(ctx, Exit{Kind: ExitMMIOWrite, Addr: MMIOBase + 8, Data: []byte{1, 2, 3, 4}}); stop != nil {
		t.Fatalf("write: %+v", stop)
	}
	if stop := v.handleExit(ctx, Exit{Kind: ExitMMIORead, Addr: MMIOBase + 16, Data: []byte{0, 0}}); stop != nil {
		t.Fatalf("read: %+v", stop)
	}
	if len(dev.writes) != 1 || dev.writes[0] != 8 || len(dev.reads) != 1 || dev.reads[0] != 16 {
		t.Errorf("device saw reads %v writes %v", dev.reads, dev.writes)
	}
	if len(d.reads) != 1 || d.reads[0] != "exit 5 mmio 0xd0000010 00 00" {
		t.Errorf("driver saw %q", d.reads)
	}
	for kind, want := range map[ExitKind]string{
		ExitMMIORead:  "unmapped MMIO read",
		ExitMMIOWrite: "KVM has completed the store",
	} {
		stop := v.handleExit(ctx, Exit{Kind: kind, Addr: 0x400000, Data: []byte{0}})
		var ge *GuestError
		if stop == nil || !errors.As(stop.err, &ge) || !strings.Contains(ge.Error(), want) || !strings.Contains(ge.More, "guest RAM ends at 0x200000") {
			t.Errorf("%v outside RAM: %+v", kind, stop)
		}
	}
}

func TestHandleExitFatal(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	for _, tc := range []struct {
		e    Exit
		want string
	}{
		{Exit{Kind: ExitShutdown}, "guest triple fault"},
		{Exit{Kind: ExitInternalError, Suberror: 1}, "guest emulation failure"},
		{Exit{Kind: ExitInternalError, Suberror: 3, InternalData: []uint64{0x80000b0e}}, "suberror 3 data [0x80000b0e]"},
		{Exit{Kind: ExitFailEntry, HardwareCode: 0x21}, "entry failure reason 0x21"},
		{Exit{Kind: ExitDebug}, "unexpected debug exit"},
		{Exit{Kind: ExitOther, Reason: 42}, "KVM exit reason 42"},
	} {
		stop := v.handleExit(context.Background(), tc.e)
		var ge *GuestError
		if stop == nil || !errors.As(stop.err, &ge) || !strings.Contains(ge.Error(), tc.want) {
			t.Errorf("%v: %+v, want a GuestError with %q", tc.e.Kind, stop, tc.want)
		}
	}
	if stop := v.handleExit(context.Background(), Exit{Kind: ExitIntr}); stop != nil {
		t.Errorf("intr: %+v", stop)
	}
	// HLT reads RFLAGS first; without a vCPU that fails as a host error.
	if stop := v.handleExit(context.Background(), Exit{Kind: ExitHLT}); stop == nil || stop.err == nil {
		t.Errorf("hlt without a vCPU: %+v", stop)
	}
}

func msrExit(kind ExitKind, msr uint32) Exit {
	return Exit{Kind: kind, MSR: msr, MSRData: make([]byte, 8), MSRError: []byte{0xAA}}
}

func TestTimeMSRs(t *testing.T) {
	v, d, _ := kvmlessVM(t)
	for _, tc := range []struct {
		msr  uint32
		want uint64
	}{
		{0x10, d.tsc}, {0xE7, d.tsc}, {0xE8, d.tsc},
		{0x3B, 0}, {0x6E0, 0}, {0x11, 0}, {0x12, 0}, {0x4B564D00, 0}, {0x4B564D01, 0},
	} {
		e := msrExit(ExitRDMSR, tc.msr)
		if stop := v.handleExit(context.Background(), e); stop != nil {
			t.Fatalf("rdmsr %#x: %+v", tc.msr, stop)
		}
		if got := binary.LittleEndian.Uint64(e.MSRData); got != tc.want || e.MSRError[0] != 0 {
			t.Errorf("rdmsr %#x = %#x (error %d), want %#x", tc.msr, got, e.MSRError[0], tc.want)
		}
	}
	if v.stats.TSCReads != 3 {
		t.Errorf("TSCReads = %d, want 3", v.stats.TSCReads)
	}
	if v.exitFaults {
		t.Error("an rdmsr exit is marked as completing with an exception")
	}
	for _, msr := range timeMSRs {
		v.exitFaults = false
		e := msrExit(ExitWRMSR, msr)
		if err := v.timeMSR(e); err != nil || e.MSRError[0] != 1 {
			t.Errorf("wrmsr %#x: %v, error byte %d; want #GP", msr, err, e.MSRError[0])
		}
		if !v.exitFaults {
			t.Errorf("wrmsr %#x completes with #GP but the loop may inject an interrupt there (the interrupt would be lost)", msr)
		}
	}
	d.tscErr = errors.New("log exhausted")
	if stop := v.handleExit(context.Background(), msrExit(ExitRDMSR, 0x10)); stop == nil || stop.err != d.tscErr {
		t.Errorf("driver TSC error: %+v", stop)
	}
}

func TestInjectInterruptAsksForWindow(t *testing.T) {
	v, d, _ := kvmlessVM(t)
	h := runHeader(kvmRun(v))
	h.RequestInterruptWindow = 1
	if err := v.injectInterrupt(); err != nil || h.RequestInterruptWindow != 0 {
		t.Errorf("nothing pending: %v, window request %d", err, h.RequestInterruptWindow)
	}
	v.PIC.SetIRQ(0, true)
	if !v.PIC.Pending() {
		t.Fatal("IRQ 0 not pending")
	}
	for _, tc := range []struct {
		ready, ifFlag uint8
		windows       bool
		want          uint8
	}{
		{0, 1, true, 1}, {1, 0, true, 1}, {0, 0, true, 1}, {0, 1, false, 0}, {1, 0, false, 0},
	} {
		h.ReadyForInterruptInjection, h.IfFlag, d.windows = tc.ready, tc.ifFlag, tc.windows
		h.RequestInterruptWindow = 1 - tc.want
		if err := v.injectInterrupt(); err != nil || h.RequestInterruptWindow != tc.want {
			t.Errorf("%+v: %v, window request %d", tc, err, h.RequestInterruptWindow)
		}
	}
	v.cancelWindow()
	if h.RequestInterruptWindow != 0 {
		t.Error("cancelWindow left the request")
	}
	// Ready: the vector goes to KVM_INTERRUPT, which fails without a vCPU.
	h.ReadyForInterruptInjection, h.IfFlag = 1, 1
	if err := v.injectInterrupt(); err == nil || !strings.Contains(err.Error(), "KVM_INTERRUPT vector") {
		t.Errorf("inject without a vCPU: %v", err)
	}
}

func TestDeliverAsyncHoldsBackInput(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	in := bytes.Repeat([]byte{'x'}, devices.UARTInputLimit+5)
	in[0] = 'a'
	v.Machine().DeliverAsync(Async{Timer: true, Input: in, DMA: []bounce.Completion{{Tag: 1}}})
	if len(v.inputBacklog) != 5 {
		t.Fatalf("backlog %d bytes, want 5", len(v.inputBacklog))
	}
	v.offerInput() // the UART is full: nothing moves
	if len(v.inputBacklog) != 5 {
		t.Errorf("backlog %d bytes after offering to a full UART", len(v.inputBacklog))
	}
	rbr := ioExit(ExitIOIn, 0x3F8, 1, 0)
	if stop := v.handleExit(context.Background(), rbr); stop != nil || rbr.Data[0] != 'a' {
		t.Fatalf("reading COM1: %+v, %q", stop, rbr.Data)
	}
	v.offerInput()
	if len(v.inputBacklog) != 4 {
		t.Errorf("backlog %d bytes after the guest read one, want 4", len(v.inputBacklog))
	}
}

func TestBounceAndDMAWiring(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	if v.Machine().Bounce() != nil || len(v.ExtraDevices()) != 0 {
		t.Fatal("a new VM has a bounce engine or extra devices")
	}
	dma, err := v.AddDMATest(func(bounce.Request) ([]byte, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	if v.Machine().Bounce() != dma.Engine() {
		t.Error("Bounce is not the DMA device's engine")
	}
	if got := v.ExtraDevices(); len(got) != 1 || got[0] != "dma-test" {
		t.Errorf("ExtraDevices = %q", got)
	}
	v.ExtraDevices()[0] = "changed"
	if v.ExtraDevices()[0] != "dma-test" {
		t.Error("ExtraDevices aliases the VM's list")
	}
	e, base, err := v.AddBounceDevice("second", func(bounce.Request) ([]byte, error) { return nil, nil }, func(bounce.Completion) {})
	if err != nil || e != dma.Engine() || base != 1<<TagShift {
		t.Errorf("a second bounce device: engine shared %v, tag base %#x, %v; want the DMA device's engine and base 1<<TagShift", e == dma.Engine(), base, err)
	}
	if _, err := v.AddDMATest(nil); err == nil {
		t.Error("second DMA test device added")
	}
	if dev, off, ok := v.MMIO.Lookup(DMABase + 4); !ok || dev != dma || off != 4 {
		t.Errorf("DMA registers not at DMABase: %v %d %v", dev, off, ok)
	}
}

func TestAccessorsWithoutVCPU(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	if v.Memory() != v.mem || v.Machine().Clock() != v.clock || v.Point() != (Point{Exits: 5, Kind: AtExit}) || v.Cmdline() != "" || v.CPUID() != nil {
		t.Error("accessors")
	}
	if _, err := v.Regs(); err == nil {
		t.Error("Regs without a vCPU")
	}
	if _, err := v.UserMode(); err == nil {
		t.Error("UserMode without a vCPU")
	}
	if err := v.setState(bootState{}); err == nil {
		t.Error("setState without a vCPU")
	}
	var g *GuestError
	if err := v.guestError("test", "more"); !errors.As(err, &g) || g.Bytes != nil || g.More != "more" {
		t.Errorf("guestError without a vCPU: %v", err)
	}
	v.Kick() // no vCPU thread: only immediate_exit is set
	if kvmRun(v)[1] != 1 {
		t.Error("Kick did not set immediate_exit")
	}
	(&VM{}).Kick() // no kvm_run (closed, or never created): a no-op
}

func TestPageContentsAndLoadPage(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	page := bytes.Repeat([]byte{0x5A}, pageSize)
	if err := v.Machine().LoadPage(3, page); err != nil {
		t.Fatal(err)
	}
	got, err := v.Machine().PageContents(3)
	if err != nil || !bytes.Equal(got, page) {
		t.Fatalf("PageContents: %v", err)
	}
	got[0] = 0
	if again, _ := v.Machine().PageContents(3); again[0] != 0x5A {
		t.Error("PageContents aliases guest memory")
	}
	if err := v.Machine().LoadPage(3, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Machine().PageContents(3); !bytes.Equal(got, make([]byte, pageSize)) {
		t.Error("LoadPage(nil) did not zero the page")
	}
	if err := v.Machine().LoadPage(3, page[:100]); err == nil {
		t.Error("short page loaded")
	}
	if err := v.Machine().LoadPage(512, page); err == nil {
		t.Error("page beyond memory loaded")
	}
	if _, err := v.Machine().PageContents(512); err == nil {
		t.Error("page beyond memory read")
	}
}

// TestKickRacesClose: kicks from timers may come while the VM is being
// closed; they must never touch the unmapped kvm_run page (go test -race
// also reports the unsynchronised access this guards against).
func TestKickRacesClose(t *testing.T) {
	for i := 0; i < 50; i++ {
		run, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		v := &VM{cpu: &kvmVCPU{fd: -1, vmFd: -1, run: run}, sysFd: -1, vmFd: -1}
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < 200; k++ {
					v.Kick()
				}
			}()
		}
		v.Close()
		wg.Wait()
		v.Kick() // after Close: a no-op
	}
}

func TestVirtioWiring(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	img, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	img.Truncate(1 << 20)
	fb, err := blk.NewFileBackend(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.AddVirtio(blk.Attachment(blk.Config{Capacity: fb.Capacity()}, fb.Backend(), blk.DiskOptions{Identity: "size=1048576", OwnCopy: true})); err != nil {
		t.Fatal(err)
	}
	guest, _ := vnet.NewLink()
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	if _, err := v.AddVirtio(vnet.Attachment(vnet.Config{MAC: mac}, guest.Backend())); err != nil {
		t.Fatal(err)
	}
	if _, err := v.AddVirtio(vnet.Attachment(vnet.Config{MAC: mac}, nil)); err == nil {
		t.Error("a virtio device without a backend was added")
	}
	for i, want := range []uint32{blk.DeviceID, vnet.DeviceID} {
		base := VirtioBase + uint64(i)*VirtioStride
		var got [4]byte
		readMMIO(t, v, base+virtio.RegMagic, got[:])
		if m := binary.LittleEndian.Uint32(got[:]); m != 0x74726976 {
			t.Errorf("device %d: magic %#x at %#x", i, m, base)
		}
		readMMIO(t, v, base+virtio.RegDeviceID, got[:])
		if id := binary.LittleEndian.Uint32(got[:]); id != want {
			t.Errorf("device %d: device ID %d, want %d", i, id, want)
		}
	}
	want := "console=ttyS0 virtio_mmio.device=0x200@0xd0020000:10 virtio_mmio.device=0x200@0xd0021000:11"
	if got := v.withVirtio("console=ttyS0"); got != want {
		t.Errorf("command line %q, want %q", got, want)
	}
	if got := v.withVirtio("virtio_mmio.device=1@2:3"); got != "virtio_mmio.device=1@2:3" {
		t.Errorf("a command line with its own devices was changed: %q", got)
	}
	devs := v.ExtraDevices()
	if len(devs) != 2 || devs[0] != "virtio-blk@0xd0020000 size=1048576" || devs[1] != "virtio-net@0xd0021000 mac=52:54:00:12:34:56" {
		t.Errorf("ExtraDevices %q", devs)
	}
	v.Machine().DeliverAsync(Async{DMA: []bounce.Completion{{Tag: 7 << TagShift}}})
	if v.stats.StrayCompletions != 1 {
		t.Errorf("a completion for no device: %d stray, want 1", v.stats.StrayCompletions)
	}
	if !(machine{v}).ReplayWrites(bounce.Request{Tag: 1, Write: true}) || (machine{v}).ReplayWrites(bounce.Request{Tag: 1}) || (machine{v}).ReplayWrites(bounce.Request{Tag: 1<<TagShift | 1, Write: true}) {
		t.Error("ReplayWrites: want the own-copy disk's writes only")
	}
	if f := v.VirtioFaults(); len(f) != 2 || f[0] != "" || f[1] != "" {
		t.Errorf("faults %q", f)
	}
}

func readMMIO(t *testing.T, v *VM, addr uint64, data []byte) {
	t.Helper()
	dev, off, ok := v.MMIO.Lookup(addr)
	if !ok {
		t.Fatalf("no MMIO device at %#x", addr)
	}
	dev.Read(off, data)
}
