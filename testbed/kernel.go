package testbed

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/klauspost/compress/zstd"
)

// extractVmlinux returns the uncompressed kernel ELF inside a bzImage if it
// can be booted through PVH (QEMU loads it directly). That is the point:
// under TCG the kernel's own decompressor (xz for Debian's 6.1) takes about
// five of a nine-second boot; the extracted ELF is cached and boots in
// about three.
func extractVmlinux(bz []byte) ([]byte, error) {
	payload, err := bzPayload(bz)
	if err != nil {
		return nil, err
	}
	var out []byte
	switch {
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		// No xz in the standard library; the xz tool is in xz-utils.
		// --single-stream: the payload ends with a 4-byte size field.
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(payload)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err != nil {
			return nil, fmt.Errorf("xz: %v %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(payload), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		// The trailing size field makes the stream end in an error; the
		// ELF check below decides whether all of it came out.
		out, _ = io.ReadAll(d)
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		r.Multistream(false)
		if out, err = io.ReadAll(r); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown kernel compression (payload starts % x)", payload[:min(len(payload), 6)])
	}
	if err := checkPVHElf(out); err != nil {
		return nil, err
	}
	return out, nil
}

// bzPayload finds the compressed kernel in a bzImage by the x86 boot
// protocol's header (2.08+): payload_offset and payload_length, relative to
// the protected-mode code after the setup sectors.
func bzPayload(bz []byte) ([]byte, error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS)")
	}
	if v := binary.LittleEndian.Uint16(bz[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x too old for payload fields", v)
	}
	setup := int(bz[0x1f1])
	if setup == 0 {
		setup = 4
	}
	start := (setup + 1) * 512
	off := start + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off < start || n <= 0 || off+n > len(bz) {
		return nil, errors.New("bzImage payload out of bounds")
	}
	return bz[off : off+n], nil
}

// checkPVHElf accepts a complete ELF with a PVH entry note (Xen note type
// 18, XEN_ELFNOTE_PHYS32_ENTRY), which QEMU needs to boot it directly.
func checkPVHElf(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("extracted kernel: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Off+p.Filesz > uint64(len(b)) {
			return errors.New("extracted kernel is truncated")
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes := b[p.Off : p.Off+p.Filesz]
		for len(notes) >= 12 {
			nsz := int(binary.LittleEndian.Uint32(notes[0:]))
			dsz := int(binary.LittleEndian.Uint32(notes[4:]))
			typ := binary.LittleEndian.Uint32(notes[8:])
			next := 12 + align4(nsz) + align4(dsz)
			if next > len(notes) {
				break
			}
			if string(bytes.TrimRight(notes[12:12+nsz], "\x00")) == "Xen" && typ == 18 {
				return nil
			}
			notes = notes[next:]
		}
	}
	return errors.New("extracted kernel has no PVH entry note (CONFIG_PVH)")
}

func align4(n int) int { return (n + 3) &^ 3 }
