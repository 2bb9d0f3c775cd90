package logchannel

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Resuming a stream on a new connection.

// cutConn passes limit bytes of writes through, then closes the connection
// in the middle of whatever it was writing.
type cutConn struct {
	net.Conn
	left atomic.Int64
}

func newCutConn(c net.Conn, limit int64) *cutConn {
	cc := &cutConn{Conn: c}
	cc.left.Store(limit)
	return cc
}

func (c *cutConn) Write(p []byte) (int, error) {
	left := c.left.Load()
	if int64(len(p)) < left {
		c.left.Add(-int64(len(p)))
		return c.Conn.Write(p)
	}
	n, _ := c.Conn.Write(p[:max(left, 0)])
	c.left.Store(0)
	c.Conn.Close()
	return n, errors.New("cut")
}

// The connection is cut in the middle of a frame: the receiver reports a
// truncated stream, and both sides resume on a new connection without
// losing or repeating an entry.
func TestCutMidFrameThenResume(t *testing.T) {
	cfg := testConfig()
	cfg.BatchBytes = 4 << 10
	a, b := NewPipe(0)
	// Cut 100 bytes into the second data frame (after the hello).
	ctx := testCtx(t)
	s, r := mustConnect(t, newCutConn(a, int64(headerLen+helloLen+headerLen+4<<10+100)), b, cfg, cfg)
	const n = 200
	go func() {
		for i := 1; i <= n; i++ {
			s.Append(ctx, entry(uint64(i), 200))
		}
	}()
	f := waitFailure(t, r.Failed(), 10*time.Second)
	wantErr(t, f.Err, ErrTruncated)
	t.Logf("receiver: %v", f)
	sf := waitFailure(t, s.Failed(), 10*time.Second)
	t.Logf("sender: %v", sf)
	a2, b2 := NewPipe(0)
	errc := make(chan error, 1)
	go func() { errc <- r.Resume(ctx, b2) }()
	if err := s.Resume(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= n; i++ {
		seq, e, err := r.Next(ctx)
		if err != nil || seq != i {
			t.Fatalf("Next: seq %d err %v, want %d", seq, err, i)
		}
		if err := checkEntry(seq, e, 200); err != nil {
			t.Fatal(err)
		}
	}
}

// Connections die again and again at random points while a stream flows;
// each time both sides resume on a new one. The consumer sees every entry
// exactly once, in order.
func TestRepeatedRestartsNoLossNoDuplication(t *testing.T) {
	for _, mode := range []AckMode{AckBuffered, AckConsumed} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := testConfig()
			cfg.AckMode = mode
			cfg.BatchBytes = 2 << 10
			cfg.WindowBytes = 32 << 10
			cfg.MaxEntryBytes = 1 << 10
			const n = 30000
			const cuts = 25
			rng := rand.New(rand.NewPCG(5, 6))
			ctx := testCtx(t)
			a, b := NewPipe(8 << 10)
			s, r := mustConnect(t, newCutConn(a, 1000+rng.Int64N(20000)), b, cfg, cfg)

			var wg sync.WaitGroup
			wg.Add(2)
			go func() { // appender
				defer wg.Done()
				for i := 1; i <= n; i++ {
					if _, err := s.Append(ctx, entry(uint64(i), 1+i%300)); err != nil {
						t.Errorf("Append %d: %v", i, err)
						return
					}
				}
			}()
			var got atomic.Uint64
			consumerDone := make(chan struct{})
			go func() { // consumer
				defer wg.Done()
				defer close(consumerDone)
				for i := uint64(1); i <= n; {
					seq, e, err := r.Next(ctx)
					if errors.Is(err, ErrDisconnected) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						t.Errorf("Next: %v", err)
						return
					}
					if seq != i {
						t.Errorf("seq %d, want %d", seq, i)
						return
					}
					if err := checkEntry(seq, e, 1+int(i)%300); err != nil {
						t.Error(err)
						return
					}
					if mode == AckConsumed || i%7 == 0 {
						r.Consumed(seq)
					}
					got.Store(i)
					i++
				}
			}()
			restarts := 0
			for done := false; !done; {
				select {
				case <-consumerDone:
					done = true
					continue
				case <-s.Failed():
				case <-r.Failed():
				}
				restarts++
				a, b := NewPipe(8 << 10)
				var conn net.Conn = a
				if restarts < cuts {
					conn = newCutConn(a, 1000+rng.Int64N(20000))
				}
				errc := make(chan error, 1)
				go func() { errc <- r.Resume(ctx, b) }()
				serr := s.Resume(ctx, conn)
				if rerr := <-errc; serr != nil || rerr != nil {
					t.Fatalf("resume %d: sender %v, receiver %v", restarts, serr, rerr)
				}
			}
			wg.Wait()
			if got.Load() != n {
				t.Fatalf("consumer got %d of %d", got.Load(), n)
			}
			if restarts < cuts {
				t.Fatalf("only %d restarts", restarts)
			}
			t.Logf("%d entries through %d connections", n, restarts+1)
		})
	}
}

func TestReceiverThatLostItsBufferIsRefused(t *testing.T) {
	a, b := NewPipe(0)
	s, r := mustConnect(t, a, b, testConfig(), testConfig())
	ctx := testCtx(t)
	for i := 0; i < 10; i++ {
		s.Append(ctx, []byte("x"))
	}
	s.Flush(ctx)
	r.Close()
	waitFailure(t, s.Failed(), 10*time.Second)
	a2, b2 := NewPipe(0)
	go NewReceiver(ctx, b2, testConfig()) // a restarted backup: empty
	err := s.Resume(ctx, a2)
	wantErr(t, err, ErrHandshake)
	t.Log(err)
}

func TestReceiverRefusesAnotherStream(t *testing.T) {
	a, b := NewPipe(0)
	_, r := mustConnect(t, a, b, testConfig(), testConfig())
	a2, b2 := NewPipe(0)
	errc := make(chan error, 1)
	go func() { _, err := NewSender(testCtx(t), a2, testConfig()); errc <- err }()
	err := r.Resume(testCtx(t), b2)
	wantErr(t, err, ErrHandshake)
	wantErr(t, <-errc, ErrHandshake)
	t.Log(err)
}
