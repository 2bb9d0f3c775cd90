package twohost

import (
	"bytes"
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
// order, unchanged, and the backup's host must finish the run. The
// backup's log of the whole run (--run-log), with every frame the guest
// received on either host, must then replay across the failover to the
// run's end state.
func TestHostDeathTCP(t *testing.T) {
	e := setup(t)
	points(t, "TCP_POINTS", 1, 1)
	dir := guestDir(t)
	rng := seeded(t)
	lan, err := pairhost.NewLAN("ftkvmt", "10.0.2.1/24")
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Close()
	killAt := 500 + rng.Intn(8000)
	shared := t.TempDir()
	runLog := filepath.Join(shared, "run.log")
	guest := []string{"--guest-dir", dir, "--work", "net", "--net", "tap:" + pairhost.LANTap, "--guest-ip", "10.0.2.15"}
	pr, err := pairhost.Start(context.Background(), pairhost.Options{
		Bin: e.Bin, Dir: shared, Limit: 8 * time.Minute, LAN: lan, Guest: append([]string{"--window-entries", "1500"}, guest...),
		BExtra: []string{"--run-log", runLog},
		BPost:  fmt.Sprintf("%q replay %q %s; echo \"replay exit $?\"", e.Bin, runLog, shellWords(guest)),
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
	post := b.Post()
	if !strings.Contains(post, "replay exit 0") || !strings.Contains(post, "replayed across a failover") {
		t.Fatalf("the replay of the whole run's log did not reach its end across the failover:\n%s", fttest.Tail(post, 12))
	}
	t.Logf("primary host killed at reply %d: all 10000 lines echoed once and in order in %v, longest wait %v; %s; the run's log replayed (%s)",
		killAt, st.Duration.Round(time.Millisecond), st.MaxRTT.Round(time.Millisecond), fttest.Line(b.log(), "LIVE at"), fttest.Line(post, "across a failover"))
}

// shellWords quotes args for the shell (arguments without quotes in them).
func shellWords(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}

// TestHostDeathDisk kills the primary's host at random points of the disk
// workload, DISK_POINTS times (default 10) with one image on the shared
// directory (the NFS stand-in both hosts mount) and as many with an image
// per host. The outside must see the workload's lines once with the
// guest's own check passed; the image the run ends with must be a clean
// ext2 holding exactly its files; and it must equal, byte for byte, the
// image an undisturbed replay of the same run builds: the backup keeps
// the log of the whole run (--run-log: the primary's log as it replayed
// it, then its own live run), and its host replays that log onto a blank
// copy of the starting image in non-shared mode once the run is over.
func TestHostDeathDisk(t *testing.T) {
	e := setup(t)
	n := points(t, "DISK_POINTS", 2, 10)
	dir := guestDir(t)
	rng := seeded(t)
	expected, err := guestcheck.ExpectedDisk(filepath.Join(dir, "expected-disk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"shared", "nonshared"} {
		for i := range n {
			step := 1 + rng.Intn(9)
			var delay time.Duration
			if step < 9 {
				delay = time.Duration(rng.Intn(1500)) * time.Millisecond
			}
			t.Run(fmt.Sprintf("%s/%d", mode, i), func(t *testing.T) { hostDeathDisk(t, e.Bin, dir, mode, step, delay, expected) })
		}
	}
}

func hostDeathDisk(t *testing.T, bin, dir, mode string, step int, delay time.Duration, expected guestcheck.Disk) {
	// The images live in the directory both hosts mount (9p, standing
	// for NFS): elsewhere each host would write its own overlay of this
	// machine's files.
	shared := t.TempDir()
	pImg, bImg := filepath.Join(shared, "disk.img"), filepath.Join(shared, "disk.img")
	if mode == "nonshared" {
		bImg = filepath.Join(shared, "backup-disk.img")
	}
	rImg, runLog := filepath.Join(shared, "replay.img"), filepath.Join(shared, "run.log")
	for _, img := range []string{pImg, bImg, rImg} {
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	trigger := fmt.Sprintf("%s%d/10", guestcheck.MarkerDiskStep, step)
	guest := []string{"--guest-dir", dir, "--window-entries", "1500", "--work", "disk"}
	post := fmt.Sprintf("%q replay %q --guest-dir %q --work disk --disk %q --disk-mode nonshared; echo \"replay exit $?\"", bin, runLog, dir, rImg)
	pr, err := pairhost.Start(context.Background(), pairhost.Options{
		Bin: bin, Dir: shared, Limit: 9 * time.Minute, Guest: guest, BPost: post,
		PExtra: []string{"--disk", pImg, "--disk-mode", mode}, BExtra: []string{"--disk", bImg, "--disk-mode", mode, "--run-log", runLog},
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
	time.Sleep(delay)
	p.Kill()
	at := fmt.Sprintf("%q + %v", trigger, delay)
	b.wait(t, 6*time.Minute)
	pOut, bOut, bLog := p.out(), b.out(), b.log()
	out, _, live, err := fttest.Junction(pOut, bOut, bLog)
	switch {
	case !live || b.status() != 0:
		t.Fatalf("killed at %s: the backup did not go live and finish (exit %d):\n%s", at, b.status(), fttest.Tail(bLog, 15))
	case err != nil:
		t.Fatalf("killed at %s: %v", at, err)
	}
	if got, err := guestcheck.ParseDisk(out); err != nil || got != expected {
		t.Fatalf("killed at %s: the guest's disk workload: %v\n%s", at, err, fttest.Tail(out, 15))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := guestcheck.CheckImage(ctx, bImg, expected); err != nil {
		t.Fatalf("killed at %s: the %s image after the failover: %v", at, mode, err)
	}
	post = b.Post()
	if !strings.Contains(post, "replay exit 0") || !strings.Contains(post, "replayed across a failover") {
		t.Fatalf("killed at %s: the replay of the whole run's log did not reach its end across the failover:\n%s", at, fttest.Tail(post, 12))
	}
	if err := sameImage(bImg, rImg); err != nil {
		t.Fatalf("killed at %s: the %s image the run ended with is not the one a replay of its log builds: %v", at, mode, err)
	}
	t.Logf("primary host killed at %s (%s disk): %s; the replay of the run's log built the same image (%s)", at, mode,
		fttest.Line(bLog, "LIVE at"), fttest.Line(post, "across a failover"))
}

// sameImage compares two disk images byte for byte.
func sameImage(a, b string) error {
	da, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	db, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if len(da) != len(db) {
		return fmt.Errorf("%d bytes against %d", len(da), len(db))
	}
	first, blocks := -1, 0
	for off := 0; off < len(da); off += 4096 {
		end := min(off+4096, len(da))
		if !bytes.Equal(da[off:end], db[off:end]) {
			if first < 0 {
				first = off
			}
			blocks++
		}
	}
	if blocks > 0 {
		return fmt.Errorf("%d blocks of 4 KiB differ, the first at offset %#x", blocks, first)
	}
	return nil
}
