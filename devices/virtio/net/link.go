package net

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ftkvm/ftkvm/bounce"
)

// ErrClosed is what an Endpoint's methods return once its link is closed.
var ErrClosed = errors.New("net: link closed")

// LinkQueue is how many frames an Endpoint holds for its reader; a frame
// sent to a full endpoint is dropped, as a switch port drops.
const LinkQueue = 256

// Endpoint is one end of an in-process Ethernet link (NewLink): frames
// sent on one end come out of the other, in order. It is the device's
// backend where no tap can be made (a userspace network: the other end is
// a program's), and the tests'. Its methods are safe for concurrent use.
type Endpoint struct {
	peer    *Endpoint
	in      chan []byte
	closed  chan struct{}
	close   *sync.Once
	dropped atomic.Uint64
	rx      batcher
}

// NewLink returns the two ends of a new link.
func NewLink() (a, b *Endpoint) {
	closed, once := make(chan struct{}), &sync.Once{}
	a = &Endpoint{in: make(chan []byte, LinkQueue), closed: closed, close: once}
	b = &Endpoint{in: make(chan []byte, LinkQueue), closed: closed, close: once}
	a.peer, b.peer = b, a
	return a, b
}

// Send puts a copy of frame on the link for the other end. It fails only
// for an empty or over-long frame, or a closed link; a frame the other end
// has no room for is dropped (and counted there), not an error.
func (e *Endpoint) Send(frame []byte) error {
	switch {
	case len(frame) == 0 || len(frame) > bounce.MaxLen:
		return fmt.Errorf("net: link: a frame of %d bytes", len(frame))
	case e.isClosed():
		return ErrClosed
	}
	select {
	case e.peer.in <- append([]byte(nil), frame...):
	default:
		e.peer.dropped.Add(1)
	}
	return nil
}

// Recv blocks until a frame arrives from the other end, or the link is
// closed (ErrClosed; frames still queued are discarded).
func (e *Endpoint) Recv() ([]byte, error) {
	if e.isClosed() {
		return nil, ErrClosed
	}
	select {
	case f := <-e.in:
		return f, nil
	case <-e.closed:
		return nil, ErrClosed
	}
}

func (e *Endpoint) isClosed() bool {
	select {
	case <-e.closed:
		return true
	default:
		return false
	}
}

// Close closes the link, both ends: blocked readers return ErrClosed.
func (e *Endpoint) Close() error {
	e.close.Do(func() { close(e.closed) })
	return nil
}

// Dropped is the number of frames sent to this end while its queue was
// full.
func (e *Endpoint) Dropped() uint64 { return e.dropped.Load() }

// Oversize is the number of frames Serve discarded as longer than
// MaxFrame.
func (e *Endpoint) Oversize() uint64 { return e.rx.oversize.Load() }

// Serve implements bounce.Backend: a write sends req.Data, one frame, to
// the other end; a read blocks until a frame arrives and returns a receive
// batch of it and the frames already queued behind it (see AppendFrame).
// Reads through Serve and Recv on one end do not mix: a batch may hold a
// frame back for the next read.
func (e *Endpoint) Serve(req bounce.Request) ([]byte, error) {
	if req.Write {
		return nil, e.Send(req.Data)
	}
	return e.rx.fill(req, e.Recv, e.poll)
}

// poll returns a frame already queued, or nil.
func (e *Endpoint) poll() []byte {
	if e.isClosed() {
		return nil
	}
	select {
	case f := <-e.in:
		return f
	default:
		return nil
	}
}

// Backend returns Serve as a bounce.Backend, for bounce.NewEngine.
func (e *Endpoint) Backend() bounce.Backend { return e.Serve }
