package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"io"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ftkvm/ftkvm/internal/mpack"
	"github.com/ftkvm/ftkvm/vmm"
)

// FormatVersion is the version of the encoding this package writes and
// the only one it reads.
const FormatVersion = 1

// Magic opens every snapshot.
const Magic = "FTKVMSNP"

// Bounds on the sections of a snapshot Decode accepts.
const (
	MaxHeaderBytes = 1 << 16
	// MaxStateBytes: the device states, completions with their data
	// included (a disk's in-flight transfers are at most a few MiB).
	MaxStateBytes = 256 << 20
	// MaxMemoryBytes bounds the guest memory a header may declare.
	MaxMemoryBytes = 1 << 40
)

const pageSize = 4096

// maxWindow is the zstd window of the memory section.
const maxWindow = 4 << 20

// ErrCorrupt is wrapped by the errors for input that is not a whole,
// intact snapshot (truncated, corrupt, malformed).
var ErrCorrupt = errors.New("snapshot corrupt")

// ErrMismatch is wrapped by the errors for a snapshot of another format
// version or configuration.
var ErrMismatch = errors.New("snapshot does not match")

// Header describes a snapshot: what a restoring VM must match, and where
// the snapshot comes from.
type Header struct {
	// Format is FormatVersion (repeated inside the checksum).
	Format uint32
	// Writer names the software that wrote it (ftvm's version line).
	Writer string
	// Time is when it was written, Unix nanoseconds (informational).
	Time int64
	// MemoryBytes is the guest memory size.
	MemoryBytes uint64
	// CPUIDHash is CPUIDHash of the VM's CPUID table.
	CPUIDHash []byte
	// Devices is vmm.VM.ExtraDevices: the devices beyond the PC set,
	// with their identities, in the order added.
	Devices []string
	// Guest identifies the guest image, for the caller (ftvm: the
	// patched kernel's SHA-256, whose rdtsc sites the VM traps).
	Guest string
	// Exits is how many synchronous exits the saved run had made.
	Exits uint64
}

// state is the second section.
type state struct {
	VCPU    []byte // vmm.VCPUState.MarshalBinary
	Devices vmm.DeviceStates
}

// Config is what a VM restored from a snapshot must be built with.
type Config struct {
	MemoryBytes uint64
	// Clock continues the saved devices' clock (vmm.Config.Clock).
	Clock *vmm.HostClock
	// Epoch is the CMOS clock's epoch (vmm.Config.Epoch).
	Epoch time.Time
}

// CPUIDHash hashes a CPUID table: two VMs whose tables differ in any bit
// have different hashes.
func CPUIDHash(t vmm.CPUID) []byte {
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, []vmm.CPUIDEntry(t))
	return h.Sum(nil)
}

// Write saves vm, stopped at a synchronous exit on the vCPU thread (see
// vmm.VM.CaptureDevices, which it calls with ctx), to w. guest and writer
// go into the header (Header.Guest, Header.Writer).
func Write(ctx context.Context, w io.Writer, vm *vmm.VM, guest, writer string) error {
	cpu, ds, err := vm.CaptureDevices(ctx)
	if err != nil {
		return err
	}
	h := Header{
		Format: FormatVersion, Writer: writer, Time: time.Now().UnixNano(),
		MemoryBytes: vm.MemoryBytes(), CPUIDHash: CPUIDHash(vm.CPUID()),
		Devices: vm.ExtraDevices(), Guest: guest, Exits: vm.Point().Exits,
	}
	return encode(w, h, cpu, ds, vm.Memory().Bytes())
}

// encode writes a snapshot of the given parts.
func encode(w io.Writer, h Header, cpu vmm.VCPUState, ds vmm.DeviceStates, mem []byte) error {
	hb, err := mpack.Marshal(h)
	if err != nil {
		return fmt.Errorf("snapshot: header: %w", err)
	}
	cb, err := cpu.MarshalBinary()
	if err != nil {
		return fmt.Errorf("snapshot: vCPU: %w", err)
	}
	sb, err := mpack.Marshal(state{VCPU: cb, Devices: ds})
	if err != nil {
		return fmt.Errorf("snapshot: devices: %w", err)
	}
	if len(hb) > MaxHeaderBytes || len(sb) > MaxStateBytes {
		return fmt.Errorf("snapshot: header of %d bytes or state of %d bytes is over the limit (%d, %d)", len(hb), len(sb), MaxHeaderBytes, MaxStateBytes)
	}
	var memz bytes.Buffer
	if err := encodeMemory(&memz, mem); err != nil {
		return err
	}
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 1<<20)
	bw.WriteString(Magic)
	le := binary.LittleEndian
	bw.Write(le.AppendUint32(nil, FormatVersion))
	bw.Write(le.AppendUint32(nil, uint32(len(hb))))
	bw.Write(hb)
	bw.Write(le.AppendUint32(nil, uint32(len(sb))))
	bw.Write(sb)
	bw.Write(le.AppendUint64(nil, uint64(memz.Len())))
	bw.Write(memz.Bytes())
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if _, err := w.Write(sum.Sum(nil)); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// encodeMemory compresses the pages of mem that are not all zero.
func encodeMemory(w io.Writer, mem []byte) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(maxWindow))
	if err != nil {
		return fmt.Errorf("snapshot: memory: %w", err)
	}
	var zero [pageSize]byte
	var pfn [4]byte
	for off := 0; off+pageSize <= len(mem); off += pageSize {
		page := mem[off : off+pageSize]
		if bytes.Equal(page, zero[:]) {
			continue
		}
		binary.LittleEndian.PutUint32(pfn[:], uint32(off/pageSize))
		zw.Write(pfn[:])
		if _, err := zw.Write(page); err != nil {
			zw.Close()
			return fmt.Errorf("snapshot: memory: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("snapshot: memory: %w", err)
	}
	return nil
}

// File is a decoded snapshot whose guest memory is still compressed.
type File struct {
	Header  Header
	VCPU    vmm.VCPUState
	Devices vmm.DeviceStates
	memory  []byte // the compressed memory section
}

// Decode checks and decodes a snapshot. It refuses, with an error
// wrapping ErrMismatch, a snapshot of another format version, and with
// one wrapping ErrCorrupt, a truncated, corrupt or malformed one. The
// guest memory is decompressed later, by Restore.
func Decode(data []byte) (*File, error) {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	if len(data) < len(Magic)+4 || string(data[:len(Magic)]) != Magic {
		return nil, corrupt("not a snapshot (no %q at the start)", Magic)
	}
	le := binary.LittleEndian
	if v := le.Uint32(data[len(Magic):]); v != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this ftkvm reads version %d", ErrMismatch, v, FormatVersion)
	}
	if len(data) < len(Magic)+4+sha256.Size {
		return nil, corrupt("truncated: %d bytes", len(data))
	}
	body, tail := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], tail) {
		return nil, corrupt("checksum mismatch (truncated or corrupt)")
	}
	return parse(body[len(Magic)+4:])
}

// parse decodes the sections after the version; the checksum is checked.
func parse(rest []byte) (*File, error) {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	section := func(what string, lenBytes int, limit uint64) ([]byte, error) {
		if len(rest) < lenBytes {
			return nil, corrupt("%s: truncated length", what)
		}
		var n uint64
		if lenBytes == 4 {
			n = uint64(binary.LittleEndian.Uint32(rest))
		} else {
			n = binary.LittleEndian.Uint64(rest)
		}
		rest = rest[lenBytes:]
		if n > limit || n > uint64(len(rest)) {
			return nil, corrupt("%s: %d bytes, but %d left and at most %d allowed", what, n, len(rest), limit)
		}
		s := rest[:n]
		rest = rest[n:]
		return s, nil
	}
	f := &File{}
	hb, err := section("header", 4, MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	if err := mpack.Unmarshal(hb, &f.Header); err != nil {
		return nil, corrupt("header: %v", err)
	}
	h := &f.Header
	switch {
	case h.Format != FormatVersion:
		return nil, corrupt("header says format %d inside a version %d snapshot", h.Format, FormatVersion)
	case h.MemoryBytes == 0 || h.MemoryBytes%pageSize != 0 || h.MemoryBytes > MaxMemoryBytes:
		return nil, corrupt("memory size %d: not a positive multiple of 4 KiB up to %d", h.MemoryBytes, uint64(MaxMemoryBytes))
	}
	sb, err := section("state", 4, MaxStateBytes)
	if err != nil {
		return nil, err
	}
	var st state
	if err := mpack.Unmarshal(sb, &st); err != nil {
		return nil, corrupt("state: %v", err)
	}
	if err := f.VCPU.UnmarshalBinary(st.VCPU); err != nil {
		return nil, corrupt("vCPU: %v", err)
	}
	f.Devices = st.Devices
	if f.memory, err = section("memory", 8, MaxMemoryBytes); err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, corrupt("%d bytes after the memory", len(rest))
	}
	return f, nil
}

// Config is what a VM that restores f must be built with, beyond its
// devices: the memory size, a clock continuing the saved one, and the
// CMOS epoch.
func (f *File) Config() Config {
	return Config{
		MemoryBytes: f.Header.MemoryBytes,
		Clock:       vmm.NewHostClockAt(f.Devices.Clock),
		Epoch:       time.Unix(0, f.Devices.Epoch),
	}
}

// Check says how vm differs from the VM the snapshot was taken of (an
// error wrapping ErrMismatch), or returns nil. guest is the caller's
// identity of the guest image, compared with Header.Guest.
func (f *File) Check(vm *vmm.VM, guest string) error {
	h := &f.Header
	mismatch := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrMismatch, fmt.Sprintf(format, a...))
	}
	switch devs := vm.ExtraDevices(); {
	case vm.MemoryBytes() != h.MemoryBytes:
		return mismatch("the snapshot has %d MiB of memory, the VM %d MiB", h.MemoryBytes>>20, vm.MemoryBytes()>>20)
	case !bytes.Equal(CPUIDHash(vm.CPUID()), h.CPUIDHash):
		return mismatch("the VM's CPUID table differs from the snapshot's (another host or ftkvm version)")
	case !slices.Equal(devs, h.Devices):
		return mismatch("the snapshot's devices are %q, the VM's %q", h.Devices, devs)
	case guest != h.Guest:
		return mismatch("the snapshot's guest is %q, this one %q", h.Guest, guest)
	}
	return nil
}

// Restore loads the snapshot into vm, which Check accepts, built with
// Config and not yet run: guest memory first (vm's memory must be all
// zero, as a new VM's is), then the vCPU and the devices
// (vmm.VM.RestoreDevices). On error vm is half restored: close it.
func (f *File) Restore(vm *vmm.VM, guest string) error {
	if err := f.Check(vm, guest); err != nil {
		return err
	}
	if err := decodeMemory(f.memory, vm.Memory().Bytes()); err != nil {
		return err
	}
	return vm.RestoreDevices(f.VCPU, f.Devices)
}

// decodeMemory decompresses the memory section into mem, page by page:
// the decompressed size is bounded by mem's, whatever the section says.
func decodeMemory(z []byte, mem []byte) error {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: memory: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	// A stream's window bounds the decoder's memory; the records bound
	// what it decodes.
	zr, err := zstd.NewReader(bytes.NewReader(z), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderMaxMemory(maxWindow))
	if err != nil {
		return corrupt("%v", err)
	}
	defer zr.Close()
	pages := uint64(len(mem) / pageSize)
	var pfn [4]byte
	next := uint64(0) // the lowest frame the next record may name
	for {
		if _, err := io.ReadFull(zr, pfn[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return corrupt("page record: %v", err)
		}
		p := uint64(binary.LittleEndian.Uint32(pfn[:]))
		if p < next || p >= pages {
			return corrupt("page %#x out of order or beyond %d pages", p, pages)
		}
		if _, err := io.ReadFull(zr, mem[p*pageSize:(p+1)*pageSize]); err != nil {
			return corrupt("page %#x: %v", p, err)
		}
		next = p + 1
	}
}
