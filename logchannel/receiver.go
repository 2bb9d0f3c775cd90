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
	endpoint // its mu also guards the fields below up to roomFor

	core        receiverCore
	streamID    uint64        // 0 until the first handshake
	lastFailure error         // cause of the last connection failure
	dataCh      chan struct{} // cap 1: Next waits here
	nextWaiting bool
	roomCh      chan struct{} // cap 1: the reader waits here for buffer space
	roomFor     *header       // the frame the reader wants to buffer (nil: not waiting)
	roomBuf     []byte        // and the buffer it was read into

	received atomic.Uint64
	wmu      sync.Mutex // serialises writes on the link: the writer's, and the reader's direct acks
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
		core:   newReceiverCore(&cfg),
		dataCh: make(chan struct{}, 1),
		roomCh: make(chan struct{}, 1),
	}
	r.setup(cfg, "sender", r.stoppedLocked)
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
	return r.resume(conn, func() error { return r.attach(ctx, conn) })
}

func (r *Receiver) attach(ctx context.Context, raw net.Conn) error {
	r.mu.Lock()
	ended := r.core.ended
	r.mu.Unlock()
	if ended {
		raw.Close()
		return errorf(ErrHandshake, "the sender closed this stream; a new one needs a new Receiver")
	}
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
	r.mu.Lock()
	r.lastFailure = nil
	r.startLocked(newLink(conn, fr, fw), r.readLoop, r.writeLoop)
	r.mu.Unlock()
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
			if r.roomFor != nil && r.core.hasRoom(r.roomFor, r.roomBuf) {
				r.roomFor, r.roomBuf = nil, nil
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
		cc.wakeWriter()
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
	// Tell the sender, best effort and briefly: it would otherwise see a
	// plain end of stream, also a failure.
	r.close(r.cfg.HeartbeatInterval)
	return nil
}

// stoppedLocked is the receiver's part of a teardown (r.mu held): it
// releases a waiting Next to see the cause, and keeps quiet after the
// sender's orderly close.
func (r *Receiver) stoppedLocked(err error) (Failure, bool) {
	if !r.core.ended {
		r.lastFailure = err
	}
	r.wakeNextLocked()
	return Failure{Err: err, LastAcked: r.core.acked, LastReceived: r.core.received, LastDelivered: r.core.delivered}, r.core.ended
}

// wakeNextLocked releases a Next waiting for an entry. r.mu held.
func (r *Receiver) wakeNextLocked() {
	if r.nextWaiting {
		r.nextWaiting = false
		select {
		case r.dataCh <- struct{}{}:
		default:
		}
	}
}

func (r *Receiver) readLoop(cc *link) {
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
			for !r.core.hasRoom(&h, raw) {
				// Stop reading: TCP back-pressure reaches the sender, whose
				// window then fills. Our silence timer is paused meanwhile.
				r.roomFor, r.roomBuf = &h, raw
				cc.live.paused.Store(true)
				r.mu.Unlock()
				select {
				case <-r.roomCh:
				case <-cc.done:
					return
				}
				r.mu.Lock()
			}
			r.roomFor, r.roomBuf = nil, nil
			if cc.live.paused.Load() {
				cc.live.lastRecv.Store(cc.live.now())
				cc.live.paused.Store(false)
			}
			err := r.core.acceptData(&h, raw)
			r.received.Store(r.core.received)
			r.wakeNextLocked()
			r.mu.Unlock()
			if err != nil {
				r.stop(cc, err)
				return
			}
		case frameHeartbeat:
		case frameClose:
			r.mu.Lock()
			err := r.core.closeStream(h.seq)
			r.wakeNextLocked()
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
func (r *Receiver) ackNow(cc *link) {
	if !r.wmu.TryLock() {
		cc.wakeWriter()
		return
	}
	defer r.wmu.Unlock()
	r.mu.Lock()
	seq, ok := r.core.ackDue()
	r.mu.Unlock()
	if !ok {
		return
	}
	if err := cc.fw.writeControl(frameAck, seq); err != nil {
		cc.hbWanted.Store(true)
		cc.wakeWriter()
		return
	}
	cc.live.lastSend.Store(cc.live.now())
}

func (r *Receiver) writeLoop(cc *link) {
	for {
		select {
		case <-cc.wake:
		case <-cc.done:
			return
		}
		r.wmu.Lock()
		if cc.closing.Load() {
			r.mu.Lock()
			seq := r.core.acked
			r.mu.Unlock()
			cc.fw.writeControl(frameClose, seq)
			r.wmu.Unlock()
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
			r.wmu.Unlock()
			continue
		}
		err := cc.fw.writeControl(typ, seq)
		r.wmu.Unlock()
		if err != nil {
			writeFailed(cc.done, &r.cfg)
			r.stop(cc, err)
			return
		}
		cc.live.lastSend.Store(cc.live.now())
	}
}
