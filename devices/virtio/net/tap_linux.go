package net

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/bounce"
)

// Tap is a Linux tap interface (IFF_TAP|IFF_NO_PI): each read(2) of its
// file is one Ethernet frame the host sent out of the interface, each
// write(2) one frame the host receives on it. Serve is the device's
// backend. Reads and writes go through Go's poller, so Close unblocks a
// waiting Serve.
type Tap struct {
	f    *os.File
	name string
	rx   batcher
}

// OpenTap creates (or attaches to a persistent) tap interface called name,
// which may hold a %d for the kernel to number (e.g. "ftkvm%d"); it needs
// CAP_NET_ADMIN and /dev/net/tun. The interface exists until Close unless
// made persistent; bringing it up and attaching it to a bridge are the
// host's business.
func OpenTap(name string) (*Tap, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("net: opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("net: tap name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("net: creating tap %q (TUNSETIFF): %w", name, err)
	}
	// A non-blocking descriptor gives a pollable *os.File.
	return &Tap{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name()}, nil
}

// Name is the interface's name.
func (t *Tap) Name() string { return t.name }

// Close detaches from the interface, which disappears unless persistent;
// a Serve waiting for a frame returns an error.
func (t *Tap) Close() error { return t.f.Close() }

// Oversize is the number of frames Serve discarded as longer than
// MaxFrame (the interface's MTU is larger than the guest's).
func (t *Tap) Oversize() uint64 { return t.rx.oversize.Load() }

// Serve implements bounce.Backend: a write sends req.Data, one frame, into
// the host (the host receives it on the interface); a read blocks until
// the host sends a frame out of the interface and returns a receive batch
// of it and the frames already waiting behind it (see AppendFrame).
func (t *Tap) Serve(req bounce.Request) ([]byte, error) {
	if req.Write {
		if _, err := t.f.Write(req.Data); err != nil {
			return nil, fmt.Errorf("net: tap %s: %w", t.name, err)
		}
		return nil, nil
	}
	return t.rx.fill(req, t.read, t.poll)
}

// read blocks until a frame arrives. Its buffer has a byte more than
// MaxFrame, so that a longer frame (cut to fit) is seen as too long.
func (t *Tap) read() ([]byte, error) {
	buf := make([]byte, MaxFrame+1)
	n, err := t.f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("net: tap %s: %w", t.name, err)
	}
	return buf[:n], nil
}

// poll returns a frame already waiting, or nil: one non-blocking read(2).
func (t *Tap) poll() []byte {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return nil
	}
	buf := make([]byte, MaxFrame+1)
	n := 0
	rc.Read(func(fd uintptr) bool {
		n, err = unix.Read(int(fd), buf)
		return true // one attempt: EAGAIN means nothing is waiting
	})
	if err != nil || n <= 0 {
		return nil
	}
	return buf[:n]
}

// Backend returns Serve as a bounce.Backend, for bounce.NewEngine.
func (t *Tap) Backend() bounce.Backend { return t.Serve }
