package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio/blk"
	vnet "github.com/ftkvm/ftkvm/devices/virtio/net"
	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

const testMem = 2 << 20

func noBackend(bounce.Request) ([]byte, error) { return nil, errors.New("no backend in this test") }

// newVM builds a VM without KVM with a disk and a NIC, as ftvm would.
func newVM(t testing.TB, cfg vmm.Config, disk string) *vmm.VM {
	t.Helper()
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = testMem
	}
	vm, _ := vmmtest.New(t, cfg, nil)
	if _, err := vm.AddVirtio(blk.Attachment(blk.Config{Capacity: 1 << 20, ID: "d"}, noBackend, blk.DiskOptions{Identity: disk})); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.AddVirtio(vnet.Attachment(vnet.Config{MAC: [6]byte{0x52, 0, 0, 0, 0, 1}}, noBackend)); err != nil {
		t.Fatal(err)
	}
	return vm
}

// pio performs a port access on vm's bus, as a guest's IN or OUT would.
func pio(t testing.TB, vm *vmm.VM, port uint64, write bool, v byte) byte {
	t.Helper()
	dev, off, ok := vm.PIO.Lookup(port)
	if !ok {
		t.Fatalf("no device at port %#x", port)
	}
	b := []byte{v}
	if write {
		dev.Write(off, b)
		return 0
	}
	dev.Read(off, b)
	return b[0]
}

// activity programs the legacy devices as a guest would: the PIC
// initialised and partly masked, the PIT in mode 2, COM1 with interrupts
// and bytes received, a CMOS index, an i8042 command byte.
func activity(t testing.TB, vm *vmm.VM) {
	for _, w := range [][2]uint64{
		{0x20, 0x11}, {0x21, 0x30}, {0x21, 0x04}, {0x21, 0x01}, {0x21, 0xfa},
		{0xa0, 0x11}, {0xa1, 0x38}, {0xa1, 0x02}, {0xa1, 0x01},
		{0x43, 0x34}, {0x40, 0x9c}, {0x40, 0x2e},
		{0x3f9, 0x07}, {0x3fb, 0x03}, {0x3fc, 0x0b}, {0x3ff, 0x5a},
		{0x70, 0x0a}, {0x64, 0x60}, {0x60, 0x47},
	} {
		pio(t, vm, w[0], true, byte(w[1]))
	}
	vm.UART.Input([]byte("typed"))
	vm.Machine().DeliverAsync(vmm.Async{Input: []byte("backlog that COM1 cannot take all of at once: " + strings.Repeat("x", 64))})
}

// registerReads reads a fixed sequence of registers, some with side
// effects (a UART receive buffer, the PIC's IRR and ISR).
func registerReads(t *testing.T, vm *vmm.VM) []byte {
	var out []byte
	for _, p := range []uint64{0x21, 0xa1, 0x20, 0x3fd, 0x3fa, 0x3f8, 0x3f8, 0x3fd, 0x3ff, 0x71, 0x64, 0x61} {
		out = append(out, pio(t, vm, p, false, 0))
	}
	pio(t, vm, 0x20, true, 0x0b) // read ISR next
	out = append(out, pio(t, vm, 0x20, false, 0))
	return out
}

func snapshotOf(t testing.TB, vm *vmm.VM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, vm, "guest-1", "test"); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// stillClock is a devices.Clock that reads a set time.
type stillClock struct{ t int64 }

func (c *stillClock) Now() int64 { return c.t }

func restored(t *testing.T, data []byte, disk string) (*vmm.VM, *File) {
	t.Helper()
	f, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Config()
	if now := c.Clock.Now(); now < f.Devices.Clock {
		t.Errorf("Config's clock reads %d, before the saved %d", now, f.Devices.Clock)
	}
	clock := &stillClock{f.Devices.Clock}
	vm := newVM(t, vmm.Config{Spec: vmm.Spec{MemoryBytes: c.MemoryBytes, Epoch: c.Epoch}, Options: vmm.Options{Clock: clock}}, disk)
	if err := f.Restore(vm, "guest-1"); err != nil {
		t.Fatal(err)
	}
	return vm, f
}

func TestRoundTrip(t *testing.T) {
	a := newVM(t, vmm.Config{Spec: vmm.Spec{Epoch: time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)}, Options: vmm.Options{Clock: &stillClock{123456789}}}, "disk-a")
	activity(t, a)
	mem := a.Memory().Bytes()
	copy(mem[0x1000:], "page one")
	copy(mem[testMem-4096:], "last page")
	data := snapshotOf(t, a)
	if len(data) > 64<<10 {
		t.Errorf("snapshot of a 2 MiB guest with 2 pages in use is %d bytes: zero pages are not skipped?", len(data))
	}
	b, f := restored(t, data, "disk-a")
	if f.Header.Writer != "test" || f.Header.MemoryBytes != testMem || len(f.Header.Devices) != 2 {
		t.Errorf("header %+v", f.Header)
	}
	if !bytes.Equal(a.Memory().Bytes(), b.Memory().Bytes()) {
		t.Fatal("guest memory differs after restore")
	}
	_, sa, err := a.CaptureDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, sb, err := b.CaptureDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sa, sb) {
		t.Fatalf("device states differ after restore:\n%+v\n%+v", sa, sb)
	}
	if ra, rb := registerReads(t, a), registerReads(t, b); !bytes.Equal(ra, rb) {
		t.Fatalf("register reads differ: % x / % x", ra, rb)
	}
}

func TestRefusals(t *testing.T) {
	a := newVM(t, vmm.Config{}, "disk-a")
	activity(t, a)
	data := snapshotOf(t, a)

	other := bytes.Clone(data)
	binary.LittleEndian.PutUint32(other[len(Magic):], FormatVersion+1)
	if _, err := Decode(other); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "format version") {
		t.Errorf("another version: %v", err)
	}
	for _, n := range []int{0, 7, 12, len(data) / 2, len(data) - 1} {
		if _, err := Decode(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d bytes: %v", n, err)
		}
	}
	for _, at := range []int{20, len(data) / 2, len(data) - 40} {
		bad := bytes.Clone(data)
		bad[at] ^= 1
		if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checksum") {
			t.Errorf("byte %d flipped: %v", at, err)
		}
	}

	f, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Config()
	for name, vm := range map[string]*vmm.VM{
		"memory size": newVM(t, vmm.Config{Spec: vmm.Spec{MemoryBytes: 2 * testMem, Epoch: c.Epoch}, Options: vmm.Options{Clock: c.Clock}}, "disk-a"),
		"disk":        newVM(t, vmm.Config{Spec: vmm.Spec{Epoch: c.Epoch}, Options: vmm.Options{Clock: c.Clock}}, "disk-b"),
	} {
		if err := f.Restore(vm, "guest-1"); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: %v, want a mismatch", name, err)
		}
	}
	vm := newVM(t, vmm.Config{Spec: vmm.Spec{Epoch: c.Epoch}, Options: vmm.Options{Clock: c.Clock}}, "disk-a")
	if err := f.Restore(vm, "another guest"); !errors.Is(err, ErrMismatch) {
		t.Errorf("another guest: %v", err)
	}

	// A state no device can be in, with a valid checksum: the device
	// refuses it by name.
	bad := *f
	bad.Devices.PIT.Port61 = 0xf0
	var buf bytes.Buffer
	if err := encode(&buf, f.Header, f.VCPU, bad.Devices, make([]byte, testMem)); err != nil {
		t.Fatal(err)
	}
	g, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	vm = newVM(t, vmm.Config{Spec: vmm.Spec{Epoch: c.Epoch}, Options: vmm.Options{Clock: c.Clock}}, "disk-a")
	before := vm.PIT.Save()
	if err := g.Restore(vm, "guest-1"); err == nil || !strings.Contains(err.Error(), "PIT") {
		t.Errorf("a bad PIT state: %v", err)
	}
	if vm.PIT.Save() != before {
		t.Error("the refused PIT state changed the PIT")
	}
}

// FuzzSnapshot feeds Decode arbitrary bytes, and the same bytes as the
// sections of a snapshot with a valid checksum, so that the parser behind
// the checksum sees them: nothing may panic or allocate beyond the
// bounds, and what decodes must restore or be refused with an error.
func FuzzSnapshot(f *testing.F) {
	a := newVM(f, vmm.Config{Options: vmm.Options{Clock: &stillClock{5}}}, "disk-a")
	activity(f, a)
	copy(a.Memory().Bytes()[0x3000:], "some memory")
	data := snapshotOf(f, a)
	body := data[len(Magic)+4 : len(data)-sha256.Size]
	f.Add(body)
	f.Add(body[:len(body)/2])
	f.Add(data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := Decode(in); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMismatch) {
			t.Fatalf("error %v wraps neither ErrCorrupt nor ErrMismatch", err)
		}
		whole := append([]byte(Magic), 1, 0, 0, 0)
		whole = append(whole, in...)
		sum := sha256.Sum256(whole)
		file, err := Decode(append(whole, sum[:]...))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v wraps neither ErrCorrupt", err)
			}
			return
		}
		if file.Header.MemoryBytes != testMem {
			return // a VM of that size is not worth building here
		}
		vm := newVM(t, vmm.Config{Spec: vmm.Spec{Epoch: time.Unix(0, file.Devices.Epoch)}, Options: vmm.Options{Clock: &stillClock{file.Devices.Clock}}}, "disk-a")
		_ = file.Restore(vm, "guest-1")
	})
}
