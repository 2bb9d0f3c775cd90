package logchannel

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// fakePeer speaks raw frames, to play a broken or silent peer.
type fakePeer struct {
	t    testing.TB
	conn net.Conn
	fw   *frameWriter
	fr   *frameReader
}

func newFakePeer(t testing.TB, c net.Conn) *fakePeer {
	return &fakePeer{t: t, conn: c, fw: newFrameWriter(c, CompressNone), fr: newFrameReader(c, 1<<20, 1<<20)}
}

func (p *fakePeer) write(b []byte) {
	if _, err := p.conn.Write(b); err != nil {
		p.t.Errorf("fake peer write: %v", err)
	}
}

func (p *fakePeer) helloFrame() []byte {
	cfg := testConfig().withDefaults()
	h := hello{configHash: testHash, streamID: 77, firstRetained: 1, maxFrame: uint32(cfg.maxFrameBytes()), heartbeatUS: 1000}
	return appendFrame(nil, frameHello, 0, 0, h.encode())
}

// handshakeAsSender sends a hello and reads the welcome.
func (p *fakePeer) handshakeAsSender() {
	p.write(p.helloFrame())
	h, _, err := p.fr.read()
	if err != nil || h.typ != frameWelcome {
		p.t.Errorf("fake sender: got %v %v, want welcome", h.typ, err)
	}
}

// handshakeAsReceiver reads a hello and welcomes it.
func (p *fakePeer) handshakeAsReceiver() {
	h, _, err := p.fr.read()
	if err != nil || h.typ != frameHello {
		p.t.Errorf("fake receiver: got %v %v, want hello", h.typ, err)
		return
	}
	w := welcome{heartbeatUS: 1000}
	p.write(appendFrame(nil, frameWelcome, 0, 0, w.encode()))
}

// fakeSenderTo starts a receiver on one end of a pipe and a fake sender
// that has done the handshake on the other.
func fakeSenderTo(t *testing.T, cfg Config) (*fakePeer, *Receiver) {
	a, b := NewPipe(0)
	p := newFakePeer(t, a)
	done := make(chan struct{})
	go func() { defer close(done); p.handshakeAsSender() }()
	r, err := NewReceiver(testCtx(t), b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	t.Cleanup(func() { r.Close(); a.Close() })
	return p, r
}

// drainUntilError reads entries until an error and returns them and it.
func drainUntilError(t *testing.T, r *Receiver) ([]uint64, error) {
	var seqs []uint64
	for {
		seq, _, err := r.Next(testCtx(t))
		if err != nil {
			return seqs, err
		}
		seqs = append(seqs, seq)
	}
}

func TestBadInputEndsConnection(t *testing.T) {
	good := dataFrame(1, []byte("one"), []byte("two"))
	cases := []struct {
		name  string
		bytes func() []byte
		want  error
	}{
		{"corrupt payload byte", func() []byte {
			f := dataFrame(3, []byte("three"))
			f[headerLen+2] ^= 0x20
			return f
		}, ErrCorrupt},
		{"corrupt header byte", func() []byte {
			f := dataFrame(3, []byte("three"))
			f[17] ^= 1
			return f
		}, ErrCorrupt},
		{"sequence gap", func() []byte { return dataFrame(4, []byte("four")) }, ErrSequence},
		{"sequence overlap", func() []byte { return dataFrame(2, []byte("two")) }, ErrSequence},
		{"truncated frame", func() []byte { return dataFrame(3, []byte("three"))[:headerLen+3] }, ErrTruncated},
		{"truncated header", func() []byte { return dataFrame(3, []byte("three"))[:10] }, ErrTruncated},
		{"ack from sender", func() []byte { return appendFrame(nil, frameAck, 1, 0, nil) }, ErrProtocol},
		{"garbage", func() []byte { return []byte("GET / HTTP/1.1\r\n\r\n GET / HTTP/1.1\r\n\r\n") }, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, r := fakeSenderTo(t, testConfig())
			p.write(good)
			p.write(c.bytes())
			p.conn.Close() // matters for the truncated cases only
			seqs, err := drainUntilError(t, r)
			if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
				t.Fatalf("delivered %v, want [1 2]", seqs)
			}
			wantErr(t, err, ErrDisconnected)
			wantErr(t, err, c.want)
			f := waitFailure(t, r.Failed(), 10*time.Second)
			wantErr(t, f.Err, c.want)
			if f.LastReceived != 2 {
				t.Fatalf("failure %v, want LastReceived 2", f)
			}
			t.Logf("%s: %v", c.name, err)
		})
	}
}

func TestWrongConfigHash(t *testing.T) {
	a, b := NewPipe(0)
	rcfg := testConfig()
	rcfg.ConfigHash[0] ^= 0xff
	_, _, serr, rerr := connect(testCtx(t), a, b, testConfig(), rcfg)
	wantErr(t, serr, ErrConfigMismatch)
	wantErr(t, rerr, ErrConfigMismatch)
	t.Logf("sender: %v\nreceiver: %v", serr, rerr)
}

func TestWrongVersion(t *testing.T) {
	t.Run("receiver refuses", func(t *testing.T) {
		a, b := NewPipe(0)
		p := newFakePeer(t, a)
		f := p.helloFrame()
		f[1] = ProtocolVersion + 1
		rehash(f)
		go p.write(f)
		_, err := NewReceiver(testCtx(t), b, testConfig())
		wantErr(t, err, ErrVersion)
		h, payload, rerr := p.fr.read()
		if rerr != nil || h.typ != frameReject {
			t.Fatalf("fake sender got %v %v, want a reject", h.typ, rerr)
		}
		wantErr(t, decodeReject(payload), ErrVersion)
	})
	t.Run("sender refuses", func(t *testing.T) {
		a, b := NewPipe(0)
		p := newFakePeer(t, b)
		go func() {
			p.fr.read()
			f := appendFrame(nil, frameWelcome, 0, 0, (&welcome{heartbeatUS: 1000}).encode())
			f[1] = ProtocolVersion + 1
			rehash(f)
			p.write(f)
		}()
		_, err := NewSender(testCtx(t), a, testConfig())
		wantErr(t, err, ErrVersion)
		t.Log(err)
	})
}

func TestHandshakeTimeout(t *testing.T) {
	a, b := NewPipe(0)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := NewReceiver(ctx, b, testConfig())
	wantErr(t, err, ErrHandshake)
	wantErr(t, err, context.DeadlineExceeded)
}

func TestEntryTooLarge(t *testing.T) {
	a, b := NewPipe(0)
	cfg := testConfig()
	cfg.MaxEntryBytes = 100
	s, _ := mustConnect(t, a, b, cfg, cfg)
	_, err := s.Append(testCtx(t), make([]byte, 101))
	wantErr(t, err, ErrEntryTooLarge)
}

func TestSenderTimesOutSilentReceiver(t *testing.T) {
	a, b := NewPipe(1 << 20)
	p := newFakePeer(t, b)
	go p.handshakeAsReceiver()
	cfg := testConfig()
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Timeout = 300 * time.Millisecond
	s, err := NewSender(testCtx(t), a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Append(testCtx(t), []byte("x"))
	f := waitFailure(t, s.Failed(), 10*time.Second)
	wantErr(t, f.Err, ErrTimeout)
	if f.LastAcked != 0 || f.LastAppended != 1 {
		t.Fatalf("failure %v", f)
	}
	t.Log(f)
}

func TestReceiverTimesOutSilentSender(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Timeout = time.Second
	p, r := fakeSenderTo(t, cfg)
	p.write(dataFrame(1, []byte("a")))
	f := waitFailure(t, r.Failed(), 10*time.Second)
	wantErr(t, f.Err, ErrTimeout)
	if f.LastReceived != 1 {
		t.Fatalf("failure %v", f)
	}
	// The receiver heartbeats (and acks) the silent sender meanwhile.
	var acks, heartbeats int
	for {
		h, _, err := p.fr.read()
		if err != nil {
			break
		}
		switch h.typ {
		case frameAck:
			acks++
		case frameHeartbeat:
			heartbeats++
		}
	}
	if acks != 1 || heartbeats < 1 {
		t.Fatalf("receiver sent %d acks and %d heartbeats", acks, heartbeats)
	}
}

// Idle both ways for several timeouts: heartbeats keep the connection up.
func TestIdleHeartbeatsKeepAlive(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Timeout = 2 * time.Second
	a, b := tcpPair(t)
	s, r := mustConnect(t, a, b, cfg, cfg)
	time.Sleep(3 * time.Second)
	select {
	case f := <-s.Failed():
		t.Fatalf("sender failed while idle: %v", f)
	case f := <-r.Failed():
		t.Fatalf("receiver failed while idle: %v", f)
	default:
	}
	seq, _ := s.Append(testCtx(t), []byte("still there"))
	if err := s.WaitAcked(testCtx(t), seq); err != nil {
		t.Fatal(err)
	}
}

// The consumer stops: Append blocks once the window is full, memory stays
// bounded on both sides, ctx cancels the blocked Append, nobody declares a
// failure, and everything arrives once the consumer is back.
func TestStalledConsumer(t *testing.T) {
	cfg := testConfig()
	cfg.WindowBytes = 64 << 10
	cfg.WindowEntries = 1000
	cfg.BatchBytes = 8 << 10
	cfg.MaxEntryBytes = 1 << 10
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.Timeout = 1500 * time.Millisecond
	a, b := tcpPair(t)
	s, r := mustConnect(t, a, b, cfg, cfg)
	var n uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := s.Append(ctx, entry(n+1, 100))
		cancel()
		if err != nil {
			wantErr(t, err, context.DeadlineExceeded)
			break
		}
		n++
		if n > 100000 {
			t.Fatal("Append never blocked")
		}
	}
	s.mu.Lock()
	unacked := s.core.usedBytes
	s.mu.Unlock()
	r.mu.Lock()
	buffered := r.core.bufBytes
	r.mu.Unlock()
	if unacked > cfg.WindowBytes || buffered > cfg.WindowBytes+cfg.BatchBytes {
		t.Fatalf("memory: sender %d unacked bytes, receiver %d buffered, window %d", unacked, buffered, cfg.WindowBytes)
	}
	t.Logf("blocked after %d entries: sender holds %d bytes, receiver %d", n, unacked, buffered)
	time.Sleep(3 * time.Second) // two timeouts with a full window
	select {
	case f := <-s.Failed():
		t.Fatalf("sender failed during the stall: %v", f)
	case f := <-r.Failed():
		t.Fatalf("receiver failed during the stall: %v", f)
	default:
	}
	go func() {
		for i := n + 1; i <= n+500; i++ {
			if _, err := s.Append(context.Background(), entry(i, 100)); err != nil {
				return
			}
		}
	}()
	for i := uint64(1); i <= n+500; i++ {
		seq, e, err := r.Next(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if seq != i {
			t.Fatalf("seq %d, want %d", seq, i)
		}
		if err := checkEntry(seq, e, 100); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWaitAckedDoesNotBlockAppend(t *testing.T) {
	cfg := testConfig()
	cfg.AckMode = AckConsumed
	a, b := NewPipe(0)
	s, r := mustConnect(t, a, b, cfg, cfg)
	ctx := testCtx(t)
	seq, _ := s.Append(ctx, []byte("output depends on this"))
	waited := make(chan error, 1)
	go func() { waited <- s.WaitAcked(ctx, seq) }()
	for i := 0; i < 1000; i++ {
		if _, err := s.Append(ctx, []byte("more")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-waited:
		t.Fatalf("WaitAcked returned %v before the entry was consumed", err)
	default:
	}
	if _, _, err := r.Next(ctx); err != nil {
		t.Fatal(err)
	}
	r.Consumed(seq)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if s.Acked() < seq {
		t.Fatalf("Acked %d", s.Acked())
	}
	if err := s.WaitAcked(ctx, s.LastAppended()+1); !errors.Is(err, ErrSequence) {
		t.Fatalf("WaitAcked beyond appended: %v", err)
	}
}

func TestCloseSemantics(t *testing.T) {
	t.Run("sender closes", func(t *testing.T) {
		a, b := NewPipe(0)
		s, r := mustConnect(t, a, b, testConfig(), testConfig())
		ctx := testCtx(t)
		s.Append(ctx, []byte("last words"))
		s.Close()
		if _, e, err := r.Next(ctx); err != nil || string(e) != "last words" {
			t.Fatalf("Next: %q %v", e, err)
		}
		if _, _, err := r.Next(ctx); err != io.EOF {
			t.Fatalf("Next after close: %v, want io.EOF", err)
		}
		select {
		case f := <-r.Failed():
			t.Fatalf("orderly close reported as failure: %v", f)
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := s.Append(ctx, nil); err != ErrClosed {
			t.Fatalf("Append after Close: %v", err)
		}
	})
	t.Run("receiver closes", func(t *testing.T) {
		cfg := testConfig()
		cfg.AckMode = AckConsumed
		a, b := NewPipe(0)
		s, r := mustConnect(t, a, b, cfg, cfg)
		ctx := testCtx(t)
		seq, _ := s.Append(ctx, []byte("x"))
		waited := make(chan error, 1)
		go func() { waited <- s.WaitAcked(ctx, seq) }()
		r.Close()
		f := waitFailure(t, s.Failed(), 10*time.Second)
		wantErr(t, f.Err, ErrPeerClosed)
		if _, _, err := r.Next(ctx); err != ErrClosed {
			t.Fatalf("Next after Close: %v", err)
		}
		s.Close()
		wantErr(t, <-waited, ErrClosed)
	})
}

func TestNextAfterFailureDrainsThenDisconnected(t *testing.T) {
	p, r := fakeSenderTo(t, testConfig())
	p.write(dataFrame(1, []byte("a"), []byte("b")))
	for r.Received() < 2 {
		time.Sleep(time.Millisecond)
	}
	p.conn.Close()
	f := waitFailure(t, r.Failed(), 10*time.Second)
	wantErr(t, f.Err, ErrPeerClosed)
	seqs, err := drainUntilError(t, r)
	if len(seqs) != 2 {
		t.Fatalf("drained %v", seqs)
	}
	wantErr(t, err, ErrDisconnected)
}
