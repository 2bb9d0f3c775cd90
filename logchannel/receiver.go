package logchannel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Receiver is the backup's end of the channel. Next and Consumed are meant
// for one consumer goroutine; the rest may be called from any goroutine.
type Receiver struct {
	cfg Config

	mu          sync.Mutex
	core        receiverCore
	streamID    uint64 // 0 until the first handshake
	cc          *recvConn
	closed      bool
	lastFailure error         // cause of the last connection failure
	dataCh      chan struct{} // cap 1: Next waits here
	nextWaiting bool
	roomCh      chan struct{} // cap 1: the reader waits here for buffer space
	roomFor     *header       // the frame the reader wants to buffer (nil: not waiting)

	received atomic.Uint64
	resumeMu sync.Mutex
	failCh   chan Failure
	closeCh  chan struct{}
}

type recvConn struct {
	conn      net.Conn
	fr        *frameReader
	fw        *frameWriter
	live      *liveness
	wake      chan struct{} // cap 1: writer wakeup
	done      chan struct{}
	wmu       sync.Mutex // serialises writes on fw: the writer's, and the reader's direct acks
	hbWanted  atomic.Bool
	closing   atomic.Bool   // the owner closes: the writer sends a close frame
	closeSent chan struct{} // closed once it has
	once      sync.Once
	wg        sync.WaitGroup
	quiet     bool // guarded by Receiver.mu
}

func (cc *recvConn) isDone() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

// NewReceiver runs the handshake on conn (TLS first if cfg.TLS is set) and
// starts receiving. conn is closed if the handshake fails; a refused
// sender is told why before the connection closes.
func NewReceiver(ctx context.Context, conn net.Conn, cfg Config) (*Receiver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(false); err != nil {
		conn.Close()
		return nil, err
	}
	r := &Receiver{
		cfg:     cfg,
		core:    newReceiverCore(&cfg),
		dataCh:  make(chan struct{}, 1),
		roomCh:  make(chan struct{}, 1),
		failCh:  make(chan Failure, 1),
		closeCh: make(chan struct{}),
	}
	if err := r.attach(ctx, conn); err != nil {
		return nil, err
	}
	return r, nil
}

// Accept accepts one connection from l and returns a Receiver on it. ctx
// interrupts the wait if l has SetDeadline (as TCP and Unix listeners do).
func Accept(ctx context.Context, l net.Listener, cfg Config) (*Receiver, error) {
	if dl, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
		var mu sync.Mutex
		accepted := false
		stop := context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if !accepted {
				dl.SetDeadline(time.Unix(1, 0))
			}
		})
		defer func() {
			stop()
			mu.Lock()
			defer mu.Unlock()
			accepted = true
			dl.SetDeadline(time.Time{}) // leave the listener as it was
		}()
	}
	conn, err := l.Accept()
	if err != nil {
		return nil, fmt.Errorf("logchannel: %w: accepting: %w", ErrNetwork, err)
	}
	return NewReceiver(ctx, conn, cfg)
}

// Resume takes a new connection from the same sender (after a Failure, or
// when the sender reconnects first) and resumes the stream after the last
// buffered entry. A live old connection is closed. conn is closed if the
// handshake fails; the receiver then stays disconnected.
func (r *Receiver) Resume(ctx context.Context, conn net.Conn) error {
	r.resumeMu.Lock()
	defer r.resumeMu.Unlock()
	r.mu.Lock()
	if r.closed || r.core.ended {
		r.mu.Unlock()
		conn.Close()
		if r.closed {
			return ErrClosed
		}
		return errorf(ErrHandshake, "the sender closed this stream; a new one needs a new Receiver")
	}
	old := r.cc
	if old != nil {
		old.quiet = true
	}
	r.mu.Unlock()
	if old != nil {
		r.stop(old, fmt.Errorf("%w: connection replaced by Resume", ErrClosed))
		old.wg.Wait()
	}
	return r.attach(ctx, conn)
}

func (r *Receiver) attach(ctx context.Context, raw net.Conn) error {
	conn, stopDeadline, err := openConn(ctx, raw, &r.cfg, false)
	if err != nil {
		return err
	}
	maxFrame := r.cfg.maxFrameBytes()
	fw := newFrameWriter(conn, CompressNone)
	fr := newFrameReader(conn, maxFrame, r.cfg.MaxEntryBytes)
	fr.alloc = func(n int) []byte {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.core.buffer(n)
	}
	refuse := func(code rejectCode, msg string) error {
		fw.writeHandshake(frameReject, encodeReject(code, msg))
		return errorf(code.sentinel(), "refused the sender: %s", msg)
	}
	err = func() error {
		fh, payload, err := fr.read()
		if err != nil {
			err = handshakeErr(ctx, "reading hello", err)
			switch {
			case errors.Is(err, ErrVersion):
				fw.writeHandshake(frameReject, encodeReject(rejectVersion, fmt.Sprintf("receiver speaks protocol version %d", ProtocolVersion)))
			case errors.Is(err, ErrCorrupt):
				fw.writeHandshake(frameReject, encodeReject(rejectBad, "malformed hello frame"))
			}
			return err
		}
		if fh.typ != frameHello {
			return refuse(rejectBad, fmt.Sprintf("expected a hello frame, got %v", fh.typ))
		}
		m, err := decodeHello(payload)
		if err != nil {
			refuse(rejectBad, err.Error())
			return err
		}
		r.mu.Lock()
		st := receiverState{
			configHash:  r.cfg.ConfigHash,
			streamID:    r.streamID,
			received:    r.core.received,
			maxFrame:    maxFrame,
			timeout:     r.cfg.Timeout,
			heartbeatUS: uint32(r.cfg.HeartbeatInterval / time.Microsecond),
		}
		r.mu.Unlock()
		if code, msg := judgeHello(&st, &m); code != 0 {
			return refuse(code, msg)
		}
		r.mu.Lock()
		r.streamID = m.streamID
		r.core.acked = r.core.ackTarget()
		w := welcome{received: r.core.received, acked: r.core.acked, heartbeatUS: st.heartbeatUS}
		r.mu.Unlock()
		if err := fw.writeHandshake(frameWelcome, w.encode()); err != nil {
			return handshakeErr(ctx, "sending welcome", err)
		}
		return nil
	}()
	stopDeadline()
	if err != nil {
		conn.Close()
		return err
	}
	cc := &recvConn{
		conn:      conn,
		fr:        fr,
		fw:        fw,
		live:      newLiveness(),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		closeSent: make(chan struct{}),
	}
	cc.live.lastRecv.Store(cc.live.now())
	cc.live.lastSend.Store(cc.live.now())
	r.mu.Lock()
	r.cc = cc
	r.lastFailure = nil
	r.mu.Unlock()
	cc.wg.Add(3)
	go r.readLoop(cc)
	go r.writeLoop(cc)
	go r.tickLoop(cc)
	return nil
}

// Next returns the next entry and its sequence number, blocking while none
// is buffered. The entry stays valid until the caller passes its seq (or a
// later one) to Consumed, which lets the receiver reuse its memory; a
// caller that never calls Consumed may keep entries for good. After the sender's orderly Close and the last entry, Next returns
// io.EOF. If the connection has failed, Next still returns every buffered
// entry and then an error wrapping ErrDisconnected and the cause: the
// point where a backup goes live (or waits for Resume and calls Next
// again). After Close it returns ErrClosed.
func (r *Receiver) Next(ctx context.Context) (uint64, []byte, error) {
	r.mu.Lock()
	for {
		if r.closed {
			r.mu.Unlock()
			return 0, nil, ErrClosed
		}
		if seq, entry, ok := r.core.next(); ok {
			if r.roomFor != nil && r.core.hasRoom(r.roomFor) {
				r.roomFor = nil
				select {
				case r.roomCh <- struct{}{}:
				default:
				}
			}
			r.mu.Unlock()
			return seq, entry, nil
		}
		switch {
		case r.core.ended:
			r.mu.Unlock()
			return 0, nil, io.EOF
		case r.cc == nil || r.cc.isDone():
			cause := r.lastFailure
			last := r.core.delivered
			r.mu.Unlock()
			return 0, nil, fmt.Errorf("%w after entry %d: %w", ErrDisconnected, last, cause)
		}
		r.nextWaiting = true
		r.mu.Unlock()
		select {
		case <-r.dataCh:
		case <-r.closeCh:
		case <-ctx.Done():
			r.mu.Lock()
			r.nextWaiting = false
			r.mu.Unlock()
			return 0, nil, fmt.Errorf("logchannel: Next: %w", ctx.Err())
		}
		r.mu.Lock()
	}
}

// Consumed reports that the caller is done with entries up to seq: in
// AckConsumed mode this is what the receiver acks; in both modes the memory
// of those entries may be reused for later ones (so copy what you keep).
// seq must not exceed the last entry Next returned.
func (r *Receiver) Consumed(seq uint64) error {
	r.mu.Lock()
	moved, err := r.core.markConsumed(seq)
	cc := r.cc
	r.mu.Unlock()
	if moved && cc != nil {
		select {
		case cc.wake <- struct{}{}:
		default:
		}
	}
	return err
}

// Received returns the sequence number of the last entry buffered.
func (r *Receiver) Received() uint64 { return r.received.Load() }

// Failed delivers a Failure each time a connection fails (the latest one
// if the previous was not read); not for Close, Resume, or the sender's
// orderly close.
func (r *Receiver) Failed() <-chan Failure { return r.failCh }

// Close closes the connection (telling the sender, best effort) and
// releases a blocked Next with ErrClosed.
func (r *Receiver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.closeCh)
	cc := r.cc
	if cc != nil {
		cc.quiet = true
	}
	r.mu.Unlock()
	r.resumeMu.Lock()
	defer r.resumeMu.Unlock()
	r.mu.Lock()
	cc = r.cc
	if cc != nil {
		cc.quiet = true
	}
	r.mu.Unlock()
	if cc != nil {
		// Tell the sender, best effort and briefly: it would otherwise
		// see a plain end of stream, also a failure.
		cc.closing.Store(true)
		select {
		case cc.wake <- struct{}{}:
		default:
		}
		t := time.NewTimer(r.cfg.HeartbeatInterval)
		select {
		case <-cc.closeSent:
		case <-cc.done:
		case <-t.C:
		}
		t.Stop()
		r.stop(cc, ErrClosed)
		cc.wg.Wait()
	}
	return nil
}

func (r *Receiver) stop(cc *recvConn, err error) {
	cc.once.Do(func() {
		r.mu.Lock()
		f := Failure{Err: err, LastAcked: r.core.acked, LastReceived: r.core.received, LastDelivered: r.core.delivered}
		quiet := cc.quiet || r.core.ended
		if !r.core.ended {
			r.lastFailure = err
		}
		if r.nextWaiting {
			r.nextWaiting = false
			select {
			case r.dataCh <- struct{}{}:
			default:
			}
		}
		r.mu.Unlock()
		close(cc.done)
		cc.conn.Close()
		if !quiet {
			select {
			case <-r.failCh:
			default:
			}
			select {
			case r.failCh <- f:
			default:
			}
		}
	})
}

func (r *Receiver) readLoop(cc *recvConn) {
	defer cc.wg.Done()
	for {
		h, raw, err := cc.fr.read()
		if err != nil {
			r.stop(cc, err)
			return
		}
		cc.live.lastRecv.Store(cc.live.now())
		switch h.typ {
		case frameData:
			r.mu.Lock()
			for !r.core.hasRoom(&h) {
				// Stop reading: TCP back-pressure reaches the sender, whose
				// window then fills. Our silence timer is paused meanwhile.
				r.roomFor = &h
				cc.live.paused.Store(true)
				r.mu.Unlock()
				select {
				case <-r.roomCh:
				case <-cc.done:
					return
				}
				r.mu.Lock()
			}
			r.roomFor = nil
			if cc.live.paused.Load() {
				cc.live.lastRecv.Store(cc.live.now())
				cc.live.paused.Store(false)
			}
			err := r.core.acceptData(&h, raw)
			r.received.Store(r.core.received)
			if r.nextWaiting {
				r.nextWaiting = false
				select {
				case r.dataCh <- struct{}{}:
				default:
				}
			}
			r.mu.Unlock()
			if err != nil {
				r.stop(cc, err)
				return
			}
		case frameHeartbeat:
		case frameClose:
			r.mu.Lock()
			err := r.core.closeStream(h.seq)
			if r.nextWaiting {
				r.nextWaiting = false
				select {
				case r.dataCh <- struct{}{}:
				default:
				}
			}
			r.mu.Unlock()
			if err == nil {
				err = errorf(ErrPeerClosed, "the sender closed the stream after seq %d", h.seq)
			}
			r.stop(cc, err)
			return
		default:
			r.stop(cc, errorf(ErrProtocol, "unexpected %v frame from the sender", h.typ))
			return
		}
		if r.cfg.AckMode == AckBuffered && !cc.fr.frameWaiting() {
			// No further whole frame has arrived: ack now. Frames that
			// arrived together are acked once, after the last of them.
			r.ackNow(cc)
		}
	}
}

// ackNow sends the ack owed from the reader's goroutine, saving the
// hand-off to the writer on the output-commit path; if the writer is busy
// writing, it is left to send the ack right after. A failed write is left
// for the reader's next read to explain (the peer's close frame, a
// truncated frame) and, failing that, for the writer's next write.
func (r *Receiver) ackNow(cc *recvConn) {
	if !cc.wmu.TryLock() {
		select {
		case cc.wake <- struct{}{}:
		default:
		}
		return
	}
	defer cc.wmu.Unlock()
	r.mu.Lock()
	seq, ok := r.core.ackDue()
	r.mu.Unlock()
	if !ok {
		return
	}
	if err := cc.fw.writeControl(frameAck, seq); err != nil {
		cc.hbWanted.Store(true)
		select {
		case cc.wake <- struct{}{}:
		default:
		}
		return
	}
	cc.live.lastSend.Store(cc.live.now())
}

func (r *Receiver) writeLoop(cc *recvConn) {
	defer cc.wg.Done()
	for {
		select {
		case <-cc.wake:
		case <-cc.done:
			return
		}
		cc.wmu.Lock()
		if cc.closing.Load() {
			r.mu.Lock()
			seq := r.core.acked
			r.mu.Unlock()
			cc.fw.writeControl(frameClose, seq)
			cc.wmu.Unlock()
			close(cc.closeSent)
			return
		}
		r.mu.Lock()
		seq, ok := r.core.ackDue()
		typ := frameAck
		if !ok {
			seq, typ = r.core.acked, frameHeartbeat
		}
		r.mu.Unlock()
		if !ok && !cc.hbWanted.Swap(false) {
			cc.wmu.Unlock()
			continue
		}
		err := cc.fw.writeControl(typ, seq)
		cc.wmu.Unlock()
		if err != nil {
			writeFailed(cc.done, &r.cfg)
			r.stop(cc, err)
			return
		}
		cc.live.lastSend.Store(cc.live.now())
	}
}

func (r *Receiver) tickLoop(cc *recvConn) {
	defer cc.wg.Done()
	t := time.NewTicker(tickPeriod(&r.cfg))
	defer t.Stop()
	for {
		select {
		case <-cc.done:
			return
		case <-t.C:
		}
		now := cc.live.now()
		lastRecv := cc.live.lastRecv.Load()
		hb, dead := livenessCheck(now, lastRecv, cc.live.lastSend.Load(), r.cfg.HeartbeatInterval, r.cfg.Timeout, cc.live.paused.Load())
		if dead {
			r.stop(cc, errorf(ErrTimeout, "nothing from the sender for %v (timeout %v)",
				time.Duration(now-lastRecv).Round(time.Millisecond), r.cfg.Timeout))
			return
		}
		if hb {
			cc.hbWanted.Store(true)
			select {
			case cc.wake <- struct{}{}:
			default:
			}
		}
	}
}
