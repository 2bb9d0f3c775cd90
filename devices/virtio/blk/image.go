package blk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrImageTooSmall: the image holds less than one sector.
var ErrImageTooSmall = fmt.Errorf("smaller than one %d-byte sector", SectorSize)

// Image is a raw disk image opened read-write for a virtio-blk disk.
type Image struct {
	File    *os.File
	Backend *FileBackend
	// Identity is the disk's identity for a log header
	// (DiskOptions.Identity): its size, and generation if one was given,
	// else the SHA-256 of its contents.
	Identity string
}

// OpenImage opens the raw image at path. Without a generation it reads
// the whole image to hash it; a generation (the caller's name for this
// state of the disk) stands in for the hash.
func OpenImage(path, generation string) (*Image, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	b, err := NewFileBackend(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if b.Capacity() == 0 {
		f.Close()
		return nil, ErrImageTooSmall
	}
	img := &Image{File: f, Backend: b, Identity: fmt.Sprintf("size=%d", b.Capacity())}
	if generation != "" {
		img.Identity += " generation=" + generation
		return img, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, int64(b.Capacity()))); err != nil {
		f.Close()
		return nil, fmt.Errorf("hashing %s: %w", path, err)
	}
	img.Identity += " sha256=" + hex.EncodeToString(h.Sum(nil))
	return img, nil
}

// Close closes the image file.
func (i *Image) Close() error {
	if i == nil || i.File == nil {
		return errors.New("blk: no image")
	}
	return i.File.Close()
}
