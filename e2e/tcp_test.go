package e2e

import (
	"context"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/guestcheck"
	"github.com/ftkvm/ftkvm/internal/hostnet"
)

// The example guest's network, as the TCP test sets it up on this host: a
// persistent tap (it outlives the primary, so the backup attaches to it
// when it goes live) with the host's address; the guest takes guestIP.
const (
	tcpTap    = "ftkvmt0"
	hostCIDR  = "10.0.2.1/24"
	guestIP   = "10.0.2.15"
	echoPort  = "7"
	echoLines = 10000
)

// makeTap creates the persistent tap with the host's address, and removes
// it when the test ends. It needs root and the tun module.
func makeTap(t *testing.T, name string) {
	t.Helper()
	remove, err := hostnet.Tap(name, hostCIDR)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
}

// TestFTKillPrimaryTCP runs the example guest's TCP echo server under FT
// and holds one connection to it from this host, through a tap, while the
// primary is killed at a random line of a 10,000-line exchange. The
// connection must never reset, and every reply must arrive exactly once,
// in order and unchanged (guestcheck.EchoCheck); then the client closes,
// the guest powers off and the backup finishes the run.
func TestFTKillPrimaryTCP(t *testing.T) {
	dir := guestDir(t)
	e := setupFT(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for the tap")
	}
	makeTap(t, tcpTap)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	killAt := 200 + rng.Intn(echoLines-1000)
	t.Logf("seed %d: the primary is killed when %d replies have arrived", seed, killAt)

	addr := freeAddr(t)
	p, b := startPair(t, e.Bin, addr, addr, t.TempDir(), "--guest-dir", dir, "--window-entries", "1500",
		"--work", "net", "--net", "tap:"+tcpTap)
	conn := dialEcho(t, p, 4*time.Minute)
	defer conn.Close()

	var once sync.Once
	killed := make(chan time.Time, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := guestcheck.EchoCheck(ctx, conn, echoLines, 32, func(n int) {
		if n >= killAt {
			once.Do(func() {
				go func() { p.kill9(); killed <- time.Now() }()
			})
		}
	})
	if err != nil {
		t.Fatalf("the TCP exchange through the failover: %v\nprimary:\n%s\nbackup:\n%s", err,
			fttest.Tail(p.stderr.String(), 8), fttest.Tail(b.stderr.String(), 12))
	}
	t.Logf("%d lines echoed exactly once and in order in %v (longest round trip %v); %s",
		st.Lines, st.Duration.Round(time.Millisecond), st.MaxRTT.Round(time.Millisecond), fttest.Line(b.stderr.String(), "LIVE at"))
	conn.Close()
	if err := b.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("backup failed: %v\n%s", err, fttest.Tail(b.stderr.String(), 20))
	}
	select {
	case <-killed:
	default:
		t.Fatalf("the exchange ended before the primary was killed")
	}
	bErr := b.stderr.String()
	if !strings.Contains(bErr, "re-sending ") {
		t.Fatalf("the backup did not go live:\n%s", fttest.Tail(bErr, 10))
	}
	if out := b.stdout.String(); !strings.Contains(out, "FTKVM-GUEST: echo done") {
		t.Errorf("the guest did not see the connection end\n%s", fttest.Tail(out, 10))
	}
}

// dialEcho waits until the guest of s says its echo server listens, then
// connects to it from this host through the tap.
func dialEcho(t *testing.T, s *side, within time.Duration) net.Conn {
	t.Helper()
	deadline := time.Now().Add(within)
	waitNetUp(t, s, within)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(guestIP, echoPort), 5*time.Second)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot connect to the guest's echo server: %v\n%s", err, fttest.Tail(s.stdout.String(), 10))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNetUp waits until the guest of s says its network is up and its echo
// server listens.
func waitNetUp(t *testing.T, s *side, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(s.stdout.String(), guestcheck.MarkerNetUp) {
		select {
		case <-s.done:
			t.Fatalf("%s ended before the guest's network came up: %v\n%s", s.name, s.err, fttest.Tail(s.stdout.String()+s.stderr.String(), 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest's network did not come up within %v\n%s", within, fttest.Tail(s.stdout.String(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
