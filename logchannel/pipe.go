package logchannel

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// NewPipe returns the two ends of an in-memory, full-duplex connection with
// a buffer of bufferBytes in each direction (64 KiB if <= 0). Unlike
// net.Pipe, a write completes as soon as the bytes fit in the buffer, as on
// a socket, so two sides that both write before reading do not deadlock;
// a full buffer blocks the writer, which gives the same back-pressure as
// TCP. Deadlines are supported. For tests and for running both ends in one
// process.
func NewPipe(bufferBytes int) (net.Conn, net.Conn) {
	if bufferBytes <= 0 {
		bufferBytes = 64 << 10
	}
	ab := newPipeBuffer(bufferBytes)
	ba := newPipeBuffer(bufferBytes)
	a := &pipeConn{in: ba, out: ab, local: pipeAddr("a"), remote: pipeAddr("b"), closed: make(chan struct{})}
	b := &pipeConn{in: ab, out: ba, local: pipeAddr("b"), remote: pipeAddr("a"), closed: make(chan struct{})}
	a.rd.init()
	a.wd.init()
	b.rd.init()
	b.wd.init()
	return a, b
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return "pipe-" + string(a) }

// pipeBuffer is one direction: a bounded byte queue.
type pipeBuffer struct {
	mu       sync.Mutex
	buf      []byte // ring
	start, n int
	eof      bool          // the writing end closed
	broken   bool          // the reading end closed
	readable chan struct{} // cap 1
	writable chan struct{} // cap 1
}

func newPipeBuffer(size int) *pipeBuffer {
	return &pipeBuffer{buf: make([]byte, size), readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// pipeDeadline is a deadline that closes a channel when it passes.
type pipeDeadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{} // closed when the deadline has passed
}

func (d *pipeDeadline) init() { d.ch = make(chan struct{}) }

func (d *pipeDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired: wait for its close
	}
	d.timer = nil
	select {
	case <-d.ch:
		d.ch = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur > 0 {
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
	} else {
		close(d.ch)
	}
}

func (d *pipeDeadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

type pipeConn struct {
	in, out       *pipeBuffer
	local, remote pipeAddr
	rd, wd        pipeDeadline
	closeOnce     sync.Once
	closed        chan struct{}
}

func (c *pipeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func timeoutErr(op string) error {
	return &net.OpError{Op: op, Net: "pipe", Err: os.ErrDeadlineExceeded}
}

func (c *pipeConn) Read(p []byte) (int, error) {
	b := c.in
	for {
		if c.isClosed() {
			return 0, &net.OpError{Op: "read", Net: "pipe", Err: net.ErrClosed}
		}
		select {
		case <-c.rd.wait():
			return 0, timeoutErr("read")
		default:
		}
		b.mu.Lock()
		if b.n > 0 {
			k := 0
			for k < len(p) && b.n > 0 {
				end := min(b.start+b.n, len(b.buf))
				m := copy(p[k:], b.buf[b.start:end])
				k += m
				b.start = (b.start + m) % len(b.buf)
				b.n -= m
			}
			b.mu.Unlock()
			signal(b.writable)
			return k, nil
		}
		if b.eof {
			b.mu.Unlock()
			return 0, io.EOF
		}
		b.mu.Unlock()
		if len(p) == 0 {
			return 0, nil
		}
		select {
		case <-b.readable:
		case <-c.closed:
		case <-c.rd.wait():
		}
	}
}

func (c *pipeConn) Write(p []byte) (int, error) {
	b := c.out
	k := 0
	for k < len(p) {
		if c.isClosed() {
			return k, &net.OpError{Op: "write", Net: "pipe", Err: net.ErrClosed}
		}
		select {
		case <-c.wd.wait():
			return k, timeoutErr("write")
		default:
		}
		b.mu.Lock()
		if b.broken {
			b.mu.Unlock()
			return k, &net.OpError{Op: "write", Net: "pipe", Err: io.ErrClosedPipe}
		}
		if free := len(b.buf) - b.n; free > 0 {
			for k < len(p) && b.n < len(b.buf) {
				at := (b.start + b.n) % len(b.buf)
				end := len(b.buf)
				if at < b.start {
					end = b.start
				}
				m := copy(b.buf[at:end], p[k:])
				k += m
				b.n += m
			}
			b.mu.Unlock()
			signal(b.readable)
			continue
		}
		b.mu.Unlock()
		select {
		case <-b.writable:
		case <-c.closed:
		case <-c.wd.wait():
		}
	}
	return k, nil
}

// Close ends both directions: the peer reads what was written, then EOF;
// the peer's writes fail.
func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.out.mu.Lock()
		c.out.eof = true
		c.out.mu.Unlock()
		signal(c.out.readable)
		c.in.mu.Lock()
		c.in.broken = true
		c.in.mu.Unlock()
		signal(c.in.writable)
	})
	return nil
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }
func (c *pipeConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { c.rd.set(t); return nil }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }
