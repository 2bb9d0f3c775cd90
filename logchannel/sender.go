package logchannel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// Sender is the primary's end of the channel. Append, Acked, WaitAcked and
// Flush may be called from any goroutine; Resume and Close from one.
type Sender struct {
	endpoint // its mu also guards the fields below up to ackCh
	streamID uint64

	core         senderCore
	writerIdle   bool          // the writer waits for work: Append must wake it
	flushTo      uint64        // a waiter needs entries up to here sent now
	pendingSince time.Time     // BatchDelay>0: when the oldest unsent entry arrived
	spaceCh      chan struct{} // closed when window space frees (nil: no waiter)
	ackCh        chan struct{} // closed when acked advances (nil: no waiter)

	acked atomic.Uint64 // mirror of core.acked for lock-free Acked
	rtt   rttProbe      // guarded by mu
	srtt  atomic.Int64  // rtt.srtt for lock-free RTT
}

// RTT is the channel's smoothed round trip: from a write that carried an
// entry to the ack that covered it, the receiver's delay before acking
// included (0 before the first sample).
func (s *Sender) RTT() time.Duration { return time.Duration(s.srtt.Load()) }

// NewSender runs the handshake on conn (and TLS first if cfg.TLS is set)
// and starts the channel. conn is closed if the handshake fails.
func NewSender(ctx context.Context, conn net.Conn, cfg Config) (*Sender, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(true); err != nil {
		conn.Close()
		return nil, err
	}
	var id [8]byte
	rand.Read(id[:])
	s := &Sender{
		streamID: binary.LittleEndian.Uint64(id[:]) | 1,
		core:     newSenderCore(&cfg),
	}
	s.setup(cfg, "receiver", s.stoppedLocked)
	if err := s.attach(ctx, conn); err != nil {
		return nil, err
	}
	return s, nil
}

// Dial connects to a receiver at addr and returns a Sender.
func Dial(ctx context.Context, network, addr string, cfg Config) (*Sender, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("logchannel: %w: dialing %s: %w", ErrNetwork, addr, err)
	}
	return NewSender(ctx, conn, cfg)
}

// Resume replaces the connection (after a Failure, or to move to a new
// one) and resumes the stream: the handshake learns the receiver's last
// buffered seq and the sender re-sends every later entry it retains, so
// the consumer sees each entry once and in order. Entries appended while
// disconnected are kept (within the window) and sent too. conn is closed
// if the handshake fails; the sender then stays disconnected and Resume
// may be tried again.
func (s *Sender) Resume(ctx context.Context, conn net.Conn) error {
	return s.resume(conn, func() error { return s.attach(ctx, conn) })
}

func (s *Sender) attach(ctx context.Context, raw net.Conn) error {
	conn, stopDeadline, err := openConn(ctx, raw, &s.cfg, true)
	if err != nil {
		return err
	}
	s.mu.Lock()
	h := hello{
		configHash:    s.cfg.ConfigHash,
		streamID:      s.streamID,
		firstRetained: s.core.acked + 1,
		lastAppended:  s.core.lastAppended(),
		maxFrame:      uint32(s.cfg.maxFrameBytes()),
		heartbeatUS:   uint32(s.cfg.HeartbeatInterval / time.Microsecond),
	}
	s.mu.Unlock()
	fw := newFrameWriter(conn, s.cfg.Compression)
	fr := newFrameReader(conn, maxHandshakePayload, 0)
	w, err := func() (welcome, error) {
		if err := fw.writeHandshake(frameHello, h.encode()); err != nil {
			return welcome{}, handshakeErr(ctx, "sending hello", err)
		}
		fh, payload, err := fr.read()
		if err != nil {
			return welcome{}, handshakeErr(ctx, "reading the receiver's answer", err)
		}
		switch fh.typ {
		case frameWelcome:
			return decodeWelcome(payload)
		case frameReject:
			return welcome{}, decodeReject(payload)
		}
		return welcome{}, errorf(ErrHandshake, "receiver answered the hello with a %v frame", fh.typ)
	}()
	stopDeadline()
	if err != nil {
		conn.Close()
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := checkWelcome(&w, s.core.acked, s.core.lastAppended(), s.cfg.Timeout); err != nil {
		conn.Close()
		return err
	}
	if err := s.core.resume(w.received, w.acked); err != nil {
		conn.Close()
		return err
	}
	s.ackAdvanced()
	s.pendingSince = time.Now()
	s.startLocked(newLink(conn, fr, fw), s.readLoop, s.writeLoop)
	return nil
}

// Append adds an entry to the log and returns its sequence number (the
// first is 1). The entry is copied. Append blocks while the window is full
// (the receiver has not acked enough), until ctx is done or the sender is
// closed; it does not fail because the connection is down, so the caller
// decides, from Failed, between Resume and giving up with Close.
func (s *Sender) Append(ctx context.Context, entry []byte) (uint64, error) {
	if len(entry) > s.cfg.MaxEntryBytes {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrEntryTooLarge, len(entry), s.cfg.MaxEntryBytes)
	}
	s.mu.Lock()
	for !s.core.fits(len(entry)) || s.closed {
		if s.closed {
			s.mu.Unlock()
			return 0, ErrClosed
		}
		if s.spaceCh == nil {
			s.spaceCh = make(chan struct{})
		}
		ch := s.spaceCh
		s.mu.Unlock()
		select {
		case <-ch:
		case <-s.closeCh:
		case <-ctx.Done():
			return 0, fmt.Errorf("logchannel: Append waiting for window space: %w", ctx.Err())
		}
		s.mu.Lock()
	}
	hadUnsent := s.core.unsent()
	batches := len(s.core.batches)
	seq := s.core.append(entry)
	if s.writerIdle {
		wake := true
		if s.cfg.BatchDelay > 0 {
			// Wake the writer to start its delay, or because a frame filled.
			wake = !hadUnsent || len(s.core.batches) != batches
			if !hadUnsent {
				s.pendingSince = time.Now()
			}
		}
		if wake {
			s.wakeWriterLocked()
		}
	} else if !hadUnsent && s.cfg.BatchDelay > 0 {
		s.pendingSince = time.Now()
	}
	s.mu.Unlock()
	return seq, nil
}

func (s *Sender) wakeWriterLocked() {
	if s.cc == nil {
		return
	}
	s.writerIdle = false
	s.cc.wakeWriter()
}

// Acked returns the highest sequence number the receiver has acknowledged.
// It takes no lock.
func (s *Sender) Acked() uint64 { return s.acked.Load() }

// LastAppended returns the sequence number of the newest entry.
func (s *Sender) LastAppended() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.lastAppended()
}

// WaitAcked blocks until the receiver has acknowledged seq (Acked() >= seq),
// ctx is done, or the sender is closed: the output-commit primitive. It
// sends pending entries up to seq at once (no batch delay) and never
// blocks Append. Like Append it waits across a connection failure and a
// Resume; watch Failed to decide otherwise.
func (s *Sender) WaitAcked(ctx context.Context, seq uint64) error {
	if s.acked.Load() >= seq {
		return nil
	}
	s.mu.Lock()
	for s.core.acked < seq {
		if seq > s.core.lastAppended() {
			last := s.core.lastAppended()
			s.mu.Unlock()
			return errorf(ErrSequence, "WaitAcked(%d) but only %d entries were appended", seq, last)
		}
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if seq > s.flushTo {
			s.flushTo = seq
			if s.cfg.BatchDelay > 0 {
				s.wakeWriterLocked()
			}
		}
		if s.ackCh == nil {
			s.ackCh = make(chan struct{})
		}
		ch := s.ackCh
		s.mu.Unlock()
		select {
		case <-ch:
		case <-s.closeCh:
		case <-ctx.Done():
			return fmt.Errorf("logchannel: WaitAcked(%d): %w", seq, ctx.Err())
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return nil
}

// Flush sends everything appended so far at once and waits until the
// receiver has acknowledged it.
func (s *Sender) Flush(ctx context.Context) error {
	return s.WaitAcked(ctx, s.LastAppended())
}

// Failed delivers a Failure each time a connection fails (the latest one
// if the previous was not read). The channel is the same for the life of
// the Sender. Not sent for the owner's own Close or Resume.
func (s *Sender) Failed() <-chan Failure { return s.failCh }

// Close sends what is pending and a close frame (bounded by cfg.Timeout),
// closes the connection and releases every blocked Append and WaitAcked
// with ErrClosed. Entries not yet acked are lost with the sender: call
// Flush first to wait for them.
func (s *Sender) Close() error {
	s.close(s.cfg.Timeout)
	return nil
}

// ackAdvanced publishes core.acked and wakes the waiters. s.mu held.
func (s *Sender) ackAdvanced() {
	s.acked.Store(s.core.acked)
	if s.ackCh != nil {
		close(s.ackCh)
		s.ackCh = nil
	}
	s.spaceFreed()
}

// spaceFreed wakes the Appends waiting for window space. s.mu held.
func (s *Sender) spaceFreed() {
	if s.spaceCh != nil {
		close(s.spaceCh)
		s.spaceCh = nil
	}
}

// stoppedLocked is the sender's part of a teardown (s.mu held): where the
// stream stood.
func (s *Sender) stoppedLocked(err error) (Failure, bool) {
	return Failure{Err: err, LastAcked: s.core.acked, LastSent: s.core.sent, LastAppended: s.core.lastAppended()}, false
}

func (s *Sender) writeLoop(cc *link) {
	batchesPerWrite := maxBatchesPerWrite
	if s.cfg.Compression != CompressNone {
		batchesPerWrite = 4 // each needs its own compression buffer
	}
	var taken []*sendBatch
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var ctl frameType
		var ctlSeq uint64
		s.mu.Lock()
		for {
			if cc.isDone() {
				s.mu.Unlock()
				return
			}
			var wait time.Duration
			if b := s.core.oldestUnsent(); b != nil {
				if s.cfg.BatchDelay == 0 || b.sealed || cc.closing.Load() || s.flushTo >= b.first {
					break
				}
				if wait = s.cfg.BatchDelay - time.Since(s.pendingSince); wait <= 0 {
					break
				}
			} else if cc.closing.Load() {
				ctl, ctlSeq = frameClose, s.core.sent
				break
			} else if cc.hbWanted.Swap(false) {
				ctl, ctlSeq = frameHeartbeat, s.core.sent
				break
			}
			s.writerIdle = true
			s.mu.Unlock()
			var timeC <-chan time.Time
			if wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				timeC = timer.C
			}
			select {
			case <-cc.wake:
			case <-cc.done:
			case <-timeC:
			}
			s.mu.Lock()
			s.writerIdle = false
		}
		taken = s.core.take(taken[:0], batchesPerWrite, maxWriteBytes)
		if len(taken) > 0 {
			if cc.closing.Load() && !s.core.unsent() {
				ctl, ctlSeq = frameClose, s.core.sent
			}
			if s.cfg.BatchDelay > 0 {
				s.pendingSince = time.Now()
			}
		}
		s.mu.Unlock()
		err := cc.fw.writeData(taken, ctl, ctlSeq)
		s.mu.Lock()
		if s.core.written(taken) {
			s.spaceFreed() // batches acked during the write are gone only now
		}
		if err == nil && len(taken) > 0 {
			s.rtt.sent(s.core.sent, time.Now())
		}
		s.mu.Unlock()
		clear(taken)
		if err != nil {
			writeFailed(cc.done, &s.cfg)
			s.stop(cc, err)
			return
		}
		cc.live.lastSend.Store(cc.live.now())
		if ctl == frameClose {
			close(cc.closeSent)
			return
		}
	}
}

func (s *Sender) readLoop(cc *link) {
	for {
		h, _, err := cc.fr.read()
		if err != nil {
			s.stop(cc, err)
			return
		}
		cc.live.lastRecv.Store(cc.live.now())
		switch h.typ {
		case frameAck, frameHeartbeat:
			s.mu.Lock()
			advanced, err := s.core.ack(h.seq)
			if advanced {
				s.ackAdvanced()
			}
			if s.rtt.acked(h.seq, time.Now()) {
				s.srtt.Store(int64(s.rtt.srtt))
			}
			s.mu.Unlock()
			if err != nil {
				s.stop(cc, err)
				return
			}
		case frameClose:
			s.stop(cc, errorf(ErrPeerClosed, "the receiver closed the channel at ack %d", h.seq))
			return
		default:
			s.stop(cc, errorf(ErrProtocol, "unexpected %v frame from the receiver", h.typ))
			return
		}
	}
}
