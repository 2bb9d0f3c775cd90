package logchannel

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// stream appends n entries of size and checks the receiver gets them in
// order, then the sender closes and the receiver sees io.EOF.
func stream(t *testing.T, a, b net.Conn, scfg, rcfg Config, n, size int) {
	t.Helper()
	ctx := testCtx(t)
	s, r := mustConnect(t, a, b, scfg, rcfg)
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := 1; i <= n; i++ {
			seq, e, err := r.Next(ctx)
			if err != nil {
				errc <- err
				return
			}
			if seq != uint64(i) {
				t.Errorf("seq %d, want %d", seq, i)
			}
			if err := checkEntry(seq, e, size); err != nil {
				errc <- err
				return
			}
			if rcfg.AckMode == AckConsumed {
				r.Consumed(seq)
			}
		}
		_, _, err := r.Next(ctx)
		if err != io.EOF {
			errc <- err
			return
		}
		errc <- nil
	}()
	for i := 1; i <= n; i++ {
		seq, err := s.Append(ctx, entry(uint64(i), size))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("Append seq %d, want %d", seq, i)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Acked(); got != uint64(n) {
		t.Fatalf("Acked %d after Flush, want %d", got, n)
	}
	s.Close()
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestStreamPipe(t *testing.T) {
	a, b := NewPipe(0)
	stream(t, a, b, testConfig(), testConfig(), 20000, 32)
}

func TestStreamTCP(t *testing.T) {
	a, b := tcpPair(t)
	stream(t, a, b, testConfig(), testConfig(), 20000, 32)
}

func TestStreamLargeEntriesSmallWindow(t *testing.T) {
	cfg := testConfig()
	cfg.WindowBytes = 200 << 10
	cfg.WindowEntries = 10
	cfg.BatchBytes = 64 << 10
	cfg.MaxEntryBytes = 100 << 10
	a, b := tcpPair(t)
	stream(t, a, b, cfg, cfg, 300, 70<<10)
}

func TestStreamAckConsumed(t *testing.T) {
	cfg := testConfig()
	cfg.AckMode = AckConsumed
	cfg.WindowEntries = 100
	a, b := NewPipe(4096)
	stream(t, a, b, cfg, cfg, 5000, 100)
}

func TestStreamCompressedBatchDelay(t *testing.T) {
	cfg := testConfig()
	cfg.Compression = CompressS2
	cfg.BatchDelay = time.Millisecond
	a, b := tcpPair(t)
	stream(t, a, b, cfg, cfg, 20000, 600)
}

var _ = context.Background

// With a batch delay, entries appended close together share one frame.
func TestBatchDelaySharesFrame(t *testing.T) {
	a, b := NewPipe(1 << 20)
	p := newFakePeer(t, b)
	go p.handshakeAsReceiver()
	cfg := testConfig()
	cfg.BatchDelay = time.Second
	cfg.HeartbeatInterval = time.Second
	s, err := NewSender(testCtx(t), a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 1; i <= 100; i++ {
		s.Append(testCtx(t), entry(uint64(i), 32))
	}
	for {
		h, _, err := p.fr.read()
		if err != nil {
			t.Fatal(err)
		}
		if h.typ == frameData {
			if h.seq != 1 || h.count != 100 {
				t.Fatalf("first data frame holds %d entries from %d, want 100 from 1", h.count, h.seq)
			}
			return
		}
	}
}

// WaitAcked sends at once, whatever the batch delay.
func TestWaitAckedBypassesBatchDelay(t *testing.T) {
	cfg := testConfig()
	cfg.BatchDelay = 5 * time.Second
	cfg.HeartbeatInterval = 5 * time.Second
	a, b := NewPipe(0)
	s, r := mustConnect(t, a, b, cfg, cfg)
	ctx := testCtx(t)
	seq, _ := s.Append(ctx, []byte("packet 1 depends on this"))
	if err := s.WaitAcked(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if got := r.Received(); got != seq {
		t.Fatalf("received %d", got)
	}
}

func TestAcceptAndDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := testCtx(t)
	rc := make(chan *Receiver, 1)
	go func() {
		r, err := Accept(ctx, l, testConfig())
		if err != nil {
			t.Error(err)
		}
		rc <- r
	}()
	s, err := Dial(ctx, "tcp", l.Addr().String(), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := <-rc
	defer r.Close()
	defer s.Close()
	seq, _ := s.Append(ctx, []byte("x"))
	if err := s.Flush(ctx); err != nil || r.Received() != seq {
		t.Fatalf("flush: %v, received %d", err, r.Received())
	}
	// A cancelled Accept returns without closing the listener.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Accept(cctx, l, testConfig()); err == nil {
		t.Fatal("Accept with a cancelled context succeeded")
	}
	go net.Dial("tcp", l.Addr().String())
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("listener unusable after a cancelled Accept: %v", err)
	}
	c.Close()
}
