package logchannel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

var testHash = [32]byte{1, 2, 3, 4}

// testConfig: generous timeouts so a loaded CI machine never fails a test
// that is not about timeouts.
func testConfig() Config {
	return Config{
		ConfigHash:        testHash,
		HeartbeatInterval: 50 * time.Millisecond,
		Timeout:           20 * time.Second,
		HandshakeTimeout:  20 * time.Second,
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect runs both handshakes concurrently over a and b.
func connect(ctx context.Context, a, b net.Conn, scfg, rcfg Config) (*Sender, *Receiver, error, error) {
	type res struct {
		r   *Receiver
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := NewReceiver(ctx, b, rcfg)
		ch <- res{r, err}
	}()
	s, serr := NewSender(ctx, a, scfg)
	rr := <-ch
	return s, rr.r, serr, rr.err
}

func mustConnect(t testing.TB, a, b net.Conn, scfg, rcfg Config) (*Sender, *Receiver) {
	t.Helper()
	s, r, serr, rerr := connect(testCtx(t), a, b, scfg, rcfg)
	if serr != nil || rerr != nil {
		t.Fatalf("connect: sender %v, receiver %v", serr, rerr)
	}
	t.Cleanup(func() { s.Close(); r.Close() })
	return s, r
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func entry(seq uint64, size int) []byte {
	e := make([]byte, size)
	for i := range e {
		e[i] = byte(seq*7 + uint64(i))
	}
	if size >= 8 {
		copy(e, fmt.Sprintf("%08d", seq%100000000))
	}
	return e
}

func checkEntry(seq uint64, got []byte, size int) error {
	want := entry(seq, size)
	if string(got) != string(want) {
		return fmt.Errorf("entry %d: got %d bytes %q..., want %q...", seq, len(got), trunc(got), trunc(want))
	}
	return nil
}

func trunc(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func wantErr(t testing.TB, err, sentinel error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
}

// waitFailure waits for a Failure on ch.
func waitFailure(t testing.TB, ch <-chan Failure, d time.Duration) Failure {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(d):
		t.Fatalf("no failure within %v", d)
	}
	return Failure{}
}
