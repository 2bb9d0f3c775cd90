package blk

import (
	"fmt"
	"os"

	"github.com/ftkvm/ftkvm/bounce"
)

// FileBackend serves the device's transfers from a raw disk image: byte i
// of the disk is byte i of the file. Its Serve method is the
// bounce.Backend; the engine may call it from several goroutines at once
// (ReadAt, WriteAt and Sync are safe for that).
type FileBackend struct {
	f    *os.File
	size uint64
}

// NewFileBackend returns a backend for the image f, whose size is taken
// now and never changes: transfers beyond it fail. The disk's capacity is
// Capacity(); f stays the caller's to close (after the engine's last
// transfer).
func NewFileBackend(f *os.File) (*FileBackend, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("blk: image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("blk: image %s is not a regular file", f.Name())
	}
	return &FileBackend{f: f, size: uint64(st.Size())}, nil
}

// Capacity is the image size rounded down to whole sectors (and to
// MaxCapacity): Config.Capacity for a disk of this image.
func (b *FileBackend) Capacity() uint64 {
	return min(b.size, MaxCapacity) / SectorSize * SectorSize
}

// Serve implements bounce.Backend: a read returns req.Len bytes at offset
// req.Arg; a write stores req.Data there; a write with no data is a flush
// (fsync of the image). Errors, including a range outside the image, are
// returned, never panics.
func (b *FileBackend) Serve(req bounce.Request) ([]byte, error) {
	if req.Write && req.Len == 0 {
		if err := b.f.Sync(); err != nil {
			return nil, fmt.Errorf("blk: flush: %w", err)
		}
		return nil, nil
	}
	if req.Len <= 0 || req.Arg > b.size || uint64(req.Len) > b.size-req.Arg {
		return nil, fmt.Errorf("blk: %d bytes at %d: outside the %d-byte image", req.Len, req.Arg, b.size)
	}
	if req.Write {
		if len(req.Data) != req.Len {
			return nil, fmt.Errorf("blk: write of %d bytes with %d bytes of data", req.Len, len(req.Data))
		}
		if _, err := b.f.WriteAt(req.Data, int64(req.Arg)); err != nil {
			return nil, fmt.Errorf("blk: write: %w", err)
		}
		return nil, nil
	}
	buf := make([]byte, req.Len)
	if _, err := b.f.ReadAt(buf, int64(req.Arg)); err != nil {
		return nil, fmt.Errorf("blk: read: %w", err)
	}
	return buf, nil
}

// Backend returns Serve as a bounce.Backend, for bounce.NewEngine.
func (b *FileBackend) Backend() bounce.Backend { return b.Serve }
