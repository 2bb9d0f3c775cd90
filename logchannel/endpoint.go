package logchannel

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Failure reports that a connection failed: the peer fell silent past the
// timeout, the connection broke, or the peer sent something invalid. It
// carries where the stream stood, which is what go-live needs.
type Failure struct {
	Err error // the cause; wraps one of the package's sentinel errors

	// Sender side: the highest seq the receiver acked, the highest seq
	// handed to the connection, and the highest seq appended.
	LastAcked    uint64
	LastSent     uint64
	LastAppended uint64

	// Receiver side: the last seq buffered and the last seq delivered by
	// Next. (LastAcked is the last ack the receiver sent.)
	LastReceived  uint64
	LastDelivered uint64
}

func (f Failure) String() string {
	return fmt.Sprintf("%v (acked %d, sent %d, appended %d, received %d, delivered %d)",
		f.Err, f.LastAcked, f.LastSent, f.LastAppended, f.LastReceived, f.LastDelivered)
}

// endpoint is the connection lifecycle that Sender and Receiver share: the
// current link, its replacement by Resume, its teardown with a Failure,
// the liveness ticker, and Close's wind-down. The handshake, the reader,
// the writer and what a Failure reports belong to each side.
type endpoint struct {
	cfg  Config
	peer string // the other end, "sender" or "receiver", for messages

	// stopped is the side's part of a teardown by err, called with mu
	// held: the Failure to report, and whether to keep quiet regardless.
	stopped func(err error) (f Failure, quiet bool)

	mu     sync.Mutex // guards these fields and the embedding side's state
	cc     *link      // current (possibly failed) connection
	closed bool

	resumeMu sync.Mutex // Resume and Close's teardown, one at a time
	failCh   chan Failure
	closeCh  chan struct{} // closed by Close
}

func (e *endpoint) setup(cfg Config, peer string, stopped func(error) (Failure, bool)) {
	e.cfg, e.peer, e.stopped = cfg, peer, stopped
	e.failCh = make(chan Failure, 1)
	e.closeCh = make(chan struct{})
}

// link is one connection: its framing, its liveness clocks, and the
// signals its reader, writer and ticker goroutines meet on.
type link struct {
	conn      net.Conn
	fr        *frameReader
	fw        *frameWriter
	live      *liveness
	wake      chan struct{} // cap 1: wakes the writer
	done      chan struct{} // closed at teardown
	closeSent chan struct{} // closed when the writer has sent the close frame
	hbWanted  atomic.Bool   // the ticker asks the writer for a heartbeat
	closing   atomic.Bool   // the owner closes: the writer ends with a close frame
	once      sync.Once
	wg        sync.WaitGroup

	quiet bool // guarded by endpoint.mu: teardown by the owner, no Failure
}

func newLink(conn net.Conn, fr *frameReader, fw *frameWriter) *link {
	l := &link{
		conn:      conn,
		fr:        fr,
		fw:        fw,
		live:      newLiveness(),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		closeSent: make(chan struct{}),
	}
	l.live.lastRecv.Store(l.live.now())
	l.live.lastSend.Store(l.live.now())
	return l
}

func (l *link) isDone() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *link) wakeWriter() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// startLocked makes l the current link and starts its reader, writer and
// ticker. e.mu held. A Close that came during the handshake winds it down
// at once.
func (e *endpoint) startLocked(l *link, reader, writer func(*link)) {
	e.cc = l
	if e.closed {
		e.windDownLocked()
	}
	l.wg.Add(3)
	for _, loop := range []func(*link){reader, writer, e.tickLoop} {
		go func() {
			defer l.wg.Done()
			loop(l)
		}()
	}
}

// resume replaces the current link: it tears the old one down quietly and
// then runs attach, which handshakes on conn and starts the new one.
func (e *endpoint) resume(conn net.Conn, attach func() error) error {
	e.resumeMu.Lock()
	defer e.resumeMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	old := e.cc
	if old != nil {
		old.quiet = true
	}
	e.mu.Unlock()
	if old != nil {
		e.stop(old, fmt.Errorf("%w: connection replaced by Resume", ErrClosed))
		old.wg.Wait()
	}
	return attach()
}

// windDownLocked tells the current link's writer to finish with a close
// frame, and the teardown to report no Failure. e.mu held.
func (e *endpoint) windDownLocked() {
	if e.cc != nil {
		e.cc.quiet = true
		e.cc.closing.Store(true)
		e.cc.wakeWriter()
	}
}

// close marks the endpoint closed, which releases every waiter on closeCh,
// gives the writer up to linger to send its close frame, and tears the
// link down.
func (e *endpoint) close(linger time.Duration) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	close(e.closeCh)
	e.windDownLocked()
	e.mu.Unlock()
	e.resumeMu.Lock()
	defer e.resumeMu.Unlock()
	e.mu.Lock()
	cc := e.cc // Resume may have replaced it meanwhile
	e.mu.Unlock()
	if cc == nil {
		return
	}
	t := time.NewTimer(linger)
	defer t.Stop()
	select {
	case <-cc.closeSent:
	case <-cc.done:
	case <-t.C:
	}
	e.stop(cc, ErrClosed)
	cc.wg.Wait()
}

// stop tears a link down once; a Failure is published unless the owner
// asked for the teardown (quiet) or the side says to keep quiet.
func (e *endpoint) stop(l *link, err error) {
	l.once.Do(func() {
		e.mu.Lock()
		// Done before stopped wakes the waiters (a Next, a WaitAcked):
		// one that wakes and looks again must find the link done, or it
		// waits for a wake-up that never comes (a backup stuck in Next
		// after its primary's link timed out).
		close(l.done)
		f, quiet := e.stopped(err)
		quiet = quiet || l.quiet
		e.mu.Unlock()
		l.conn.Close()
		if !quiet {
			select {
			case <-e.failCh: // replace an unread older failure
			default:
			}
			select {
			case e.failCh <- f:
			default:
			}
		}
	})
}

// tickLoop fails the link when the peer falls silent past the timeout and
// asks the writer for a heartbeat when this side has been quiet.
func (e *endpoint) tickLoop(l *link) {
	period := tickPeriod(&e.cfg)
	t := time.NewTicker(period)
	defer t.Stop()
	j := newSilenceJudge(l.live.now(), l.live.lastRecv.Load(), period, &e.cfg)
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		now := l.live.now()
		hb, dead := j.tick(now, l.live.lastRecv.Load(), l.live.lastSend.Load(), l.live.paused.Load())
		if dead {
			e.stop(l, errorf(ErrTimeout, "%s", j.verdict(now, e.peer)))
			return
		}
		if hb {
			l.hbWanted.Store(true)
			l.wakeWriter()
		}
	}
}
