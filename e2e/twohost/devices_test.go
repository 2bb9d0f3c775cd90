package twohost

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/guestcheck"
	"github.com/ftkvm/ftkvm/internal/pairhost"
)

func guestDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FTKVM_GUEST_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(), "guest", "out")
	}
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err != nil {
		t.Fatalf("the example guest is not built in %s (make guest): %v", dir, err)
	}
	return dir
}

// TestHostDeathTCP is the failover a network user sees: the guest's TCP
// echo server on a network this machine is on (pairhost.LAN: a bridge
// here, a tap per host bridged inside with the guest's tap), a client
// here sending 10,000 numbered lines, and the primary's host killed
// (SIGKILL of its QEMU: no reset reaches anyone) at a random line. The
// one connection must never reset, every reply must arrive once, in
// order, unchanged, and the backup's host must finish the run.
func TestHostDeathTCP(t *testing.T) {
	e := setup(t)
	points(t, "TCP_POINTS", 1)
	dir := guestDir(t)
	rng := seeded(t)
	lan, err := pairhost.NewLAN("ftkvmt", "10.0.2.1/24")
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Close()
	killAt := 500 + rng.Intn(8000)
	pr, err := pairhost.Start(context.Background(), pairhost.Options{
		Bin: e.Bin, Dir: t.TempDir(), Limit: 7 * time.Minute, LAN: lan,
		Guest: []string{"--guest-dir", dir, "--window-entries", "1500", "--work", "net", "--net", "tap:" + pairhost.LANTap, "--guest-ip", "10.0.2.15"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	p, b := side{pr.Primary}, side{pr.Backup}
	deadline := time.Now().Add(4 * time.Minute)
	for !strings.Contains(p.out(), guestcheck.MarkerNetUp) {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the guest's network did not come up (primary exited %v)\n%s", p.exited(), fttest.Tail(p.out()+p.log(), 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var conn net.Conn
	for conn == nil {
		c, err := net.DialTimeout("tcp", "10.0.2.15:7", 5*time.Second)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("cannot connect to the guest: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		conn = c
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var once sync.Once
	killed := make(chan struct{})
	st, err := guestcheck.EchoCheck(ctx, conn, 10000, 32, func(n int) {
		if n >= killAt {
			once.Do(func() { go func() { p.Kill(); close(killed) }() })
		}
	})
	if err != nil {
		t.Fatalf("the TCP exchange through the host failover (kill at reply %d): %v\nbackup:\n%s", killAt, err, fttest.Tail(b.log(), 12))
	}
	conn.Close()
	<-killed
	b.wait(t, 4*time.Minute)
	if b.status() != 0 {
		t.Fatalf("backup exited %d\n%s", b.status(), fttest.Tail(b.log(), 15))
	}
	if !strings.Contains(b.log(), "re-sending ") || !strings.Contains(b.out(), guestcheck.MarkerEchoDone) {
		t.Fatalf("the backup did not go live and finish the server's run:\n%s\n%s", fttest.Tail(b.log(), 10), fttest.Tail(b.out(), 5))
	}
	t.Logf("primary host killed at reply %d: all 10000 lines echoed once and in order in %v, longest wait %v; %s",
		killAt, st.Duration.Round(time.Millisecond), st.MaxRTT.Round(time.Millisecond), fttest.Line(b.log(), "LIVE at"))
}

// TestHostDeathDisk kills the primary's host during the disk workload,
// once with one image on the shared directory (the NFS stand-in both hosts
// mount) and once with an image per host: the outside must see the
// workload's lines once with the guest's own check passed, and the image
// the run ends with must be a clean ext2 holding exactly its files.
func TestHostDeathDisk(t *testing.T) {
	e := setup(t)
	points(t, "DISK_POINTS", 1)
	dir := guestDir(t)
	rng := seeded(t)
	expected, err := guestcheck.ExpectedDisk(filepath.Join(dir, "expected-disk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"shared", "nonshared"} {
		t.Run(mode, func(t *testing.T) {
			// The images live in the directory both hosts mount (9p,
			// standing for NFS): elsewhere each host would write its own
			// overlay of this machine's files.
			shared := t.TempDir()
			pImg, bImg := filepath.Join(shared, "disk.img"), filepath.Join(shared, "disk.img")
			if mode == "nonshared" {
				bImg = filepath.Join(shared, "backup-disk.img")
			}
			for _, img := range []string{pImg, bImg} {
				if err := os.WriteFile(img, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(img, 8<<20); err != nil {
					t.Fatal(err)
				}
			}
			trigger := fmt.Sprintf("%s%d/10", guestcheck.MarkerDiskStep, 1+rng.Intn(9))
			guest := []string{"--guest-dir", dir, "--window-entries", "1500", "--work", "disk", "--disk-mode", mode}
			pr, err := pairhost.Start(context.Background(), pairhost.Options{
				Bin: e.Bin, Dir: shared, Limit: 7 * time.Minute, Guest: guest,
				PExtra: []string{"--disk", pImg}, BExtra: []string{"--disk", bImg},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pr.Close)
			p, b := side{pr.Primary}, side{pr.Backup}
			for !strings.Contains(p.out(), trigger) {
				if p.exited() {
					t.Fatalf("the primary ended before the outside saw %q (exit %d)\n%s", trigger, p.status(), fttest.Tail(p.log(), 10))
				}
				time.Sleep(10 * time.Millisecond)
			}
			p.Kill()
			b.wait(t, 5*time.Minute)
			pOut, bOut, bLog := p.out(), b.out(), b.log()
			var nb, from int
			if _, err := fmt.Sscanf(fttest.After(bLog, "re-sending "), "%d console bytes from offset %d", &nb, &from); err != nil || b.status() != 0 {
				t.Fatalf("killed after %q: the backup did not go live and finish (exit %d):\n%s", trigger, b.status(), fttest.Tail(bLog, 15))
			}
			if from > len(pOut) || !strings.HasPrefix(bOut, pOut[from:]) {
				t.Fatalf("killed after %q: console output lost or garbled at the failover", trigger)
			}
			out := pOut[:from] + bOut
			if got, err := guestcheck.ParseDisk(out); err != nil || got != expected {
				t.Fatalf("killed after %q: the guest's disk workload: %v\n%s", trigger, err, fttest.Tail(out, 15))
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := guestcheck.CheckImage(ctx, bImg, expected); err != nil {
				t.Fatalf("killed after %q: the %s image after the failover: %v", trigger, mode, err)
			}
			t.Logf("primary host killed after %q (%s disk): %s", trigger, mode, fttest.Line(bLog, "LIVE at"))
		})
	}
}
