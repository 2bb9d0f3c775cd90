package logchannel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
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

// Sender is the primary's end of the channel. Append, Acked, WaitAcked and
// Flush may be called from any goroutine; Resume and Close from one.
type Sender struct {
	cfg      Config
	streamID uint64

	mu           sync.Mutex
	core         senderCore
	cc           *senderConn // current (possibly failed) connection
	closed       bool
	writerIdle   bool          // the writer waits for work: Append must wake it
	flushTo      uint64        // a waiter needs entries up to here sent now
	pendingSince time.Time     // BatchDelay>0: when the oldest unsent entry arrived
	spaceCh      chan struct{} // closed when window space frees (nil: no waiter)
	ackCh        chan struct{} // closed when acked advances (nil: no waiter)

	acked    atomic.Uint64 // mirror of core.acked for lock-free Acked
	resumeMu sync.Mutex
	failCh   chan Failure
	closeCh  chan struct{}
}

// senderConn is one connection's goroutines and state.
type senderConn struct {
	conn      net.Conn
	fr        *frameReader
	fw        *frameWriter
	live      *liveness
	wake      chan struct{} // cap 1
	done      chan struct{} // closed at teardown
	closeSent chan struct{} // closed when the writer has sent the close frame
	hbWanted  atomic.Bool
	once      sync.Once
	wg        sync.WaitGroup

	closing bool // guarded by Sender.mu: send the rest, then a close frame
	quiet   bool // guarded by Sender.mu: teardown by the owner, no Failure
}

func (cc *senderConn) isDone() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

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
		cfg:      cfg,
		streamID: binary.LittleEndian.Uint64(id[:]) | 1,
		core:     newSenderCore(&cfg),
		failCh:   make(chan Failure, 1),
		closeCh:  make(chan struct{}),
	}
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
	s.resumeMu.Lock()
	defer s.resumeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	old := s.cc
	if old != nil {
		old.quiet = true
	}
	s.mu.Unlock()
	if old != nil {
		s.stop(old, fmt.Errorf("%w: connection replaced by Resume", ErrClosed))
		old.wg.Wait()
	}
	return s.attach(ctx, conn)
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
	cc := &senderConn{
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
	s.cc = cc
	s.pendingSince = time.Now()
	if s.closed {
		cc.closing, cc.quiet = true, true
	}
	cc.wg.Add(3)
	go s.writeLoop(cc)
	go s.readLoop(cc)
	go s.tickLoop(cc)
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
	select {
	case s.cc.wake <- struct{}{}:
	default:
	}
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
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closeCh)
	cc := s.cc
	if cc != nil {
		cc.closing, cc.quiet = true, true
		s.wakeWriterLocked()
	}
	s.mu.Unlock()
	s.resumeMu.Lock()
	defer s.resumeMu.Unlock()
	s.mu.Lock()
	cc = s.cc // Resume may have replaced it meanwhile
	s.mu.Unlock()
	if cc == nil {
		return nil
	}
	t := time.NewTimer(s.cfg.Timeout)
	defer t.Stop()
	select {
	case <-cc.closeSent:
	case <-cc.done:
	case <-t.C:
	}
	s.stop(cc, ErrClosed)
	cc.wg.Wait()
	return nil
}

// ackAdvanced publishes core.acked and wakes the waiters. s.mu held.
func (s *Sender) ackAdvanced() {
	s.acked.Store(s.core.acked)
	if s.ackCh != nil {
		close(s.ackCh)
		s.ackCh = nil
	}
	if s.spaceCh != nil {
		close(s.spaceCh)
		s.spaceCh = nil
	}
}

// stop tears a connection down once; a Failure is published unless the
// owner asked for it (quiet).
func (s *Sender) stop(cc *senderConn, err error) {
	cc.once.Do(func() {
		s.mu.Lock()
		f := Failure{Err: err, LastAcked: s.core.acked, LastSent: s.core.sent, LastAppended: s.core.lastAppended()}
		quiet := cc.quiet
		s.mu.Unlock()
		close(cc.done)
		cc.conn.Close()
		if !quiet {
			select {
			case <-s.failCh: // replace an unread older failure
			default:
			}
			select {
			case s.failCh <- f:
			default:
			}
		}
	})
}

func (s *Sender) writeLoop(cc *senderConn) {
	defer cc.wg.Done()
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
				if s.cfg.BatchDelay == 0 || b.sealed || cc.closing || s.flushTo >= b.first {
					break
				}
				if wait = s.cfg.BatchDelay - time.Since(s.pendingSince); wait <= 0 {
					break
				}
			} else if cc.closing {
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
			if cc.closing && !s.core.unsent() {
				ctl, ctlSeq = frameClose, s.core.sent
			}
			if s.cfg.BatchDelay > 0 {
				s.pendingSince = time.Now()
			}
		}
		s.mu.Unlock()
		err := cc.fw.writeData(taken, ctl, ctlSeq)
		s.mu.Lock()
		s.core.written(taken)
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

func (s *Sender) readLoop(cc *senderConn) {
	defer cc.wg.Done()
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

func (s *Sender) tickLoop(cc *senderConn) {
	defer cc.wg.Done()
	t := time.NewTicker(tickPeriod(&s.cfg))
	defer t.Stop()
	for {
		select {
		case <-cc.done:
			return
		case <-t.C:
		}
		now := cc.live.now()
		lastRecv := cc.live.lastRecv.Load()
		hb, dead := livenessCheck(now, lastRecv, cc.live.lastSend.Load(), s.cfg.HeartbeatInterval, s.cfg.Timeout, false)
		if dead {
			s.stop(cc, errorf(ErrTimeout, "nothing from the receiver for %v (timeout %v)",
				time.Duration(now-lastRecv).Round(time.Millisecond), s.cfg.Timeout))
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
