package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/guestcheck"
)

// diskImageBytes is the example guest's disk: big enough for its files and
// ext2's metadata, small enough to hash at start.
const diskImageBytes = 8 << 20

func newImage(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(diskImageBytes); err != nil {
		t.Fatal(err)
	}
}

// diskPoints is how many kill points each disk mode gets here: 1 in make
// test, 3 in make soak, FTKVM_E2E_DISK_POINTS to choose. The 10
// per mode are host deaths, in e2e/twohost (TestHostDeathDisk); these are
// process deaths on one host (the backup sees a reset, not silence), with
// kill points spread over the boot too.
func diskPoints(t *testing.T) int { return fttest.Points(t, "FTKVM_E2E_DISK_POINTS", 1, 3) }

// TestFTKillPrimaryDisk kills the primary at random points of the example
// guest's disk workload (mke2fs, ten files written and synced, the page
// cache dropped, every file read back and checked), with one image both
// sides reach (shared) and with a copy each (nonshared: the backup writes
// its copy as it replays). The outside must see every disk marker once and
// the guest's own check pass; afterwards the image the survivor wrote must
// be a clean ext2 holding exactly the files the guest wrote (e2fsck and
// debugfs on the host, internal/guestcheck).
func TestFTKillPrimaryDisk(t *testing.T) {
	dir := guestDir(t)
	e := setupFT(t)
	points := diskPoints(t)
	expected, err := guestcheck.ExpectedDisk(filepath.Join(dir, "expected-disk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	for _, mode := range []string{"shared", "nonshared"} {
		t.Run(mode, func(t *testing.T) {
			for i := 0; i < points; i++ {
				// The boot takes ~10 s and the workload a few more:
				// points from the boot to the end.
				delay := time.Duration(2000+rng.Intn(25000)) * time.Millisecond
				t.Run(fmt.Sprint(i), func(t *testing.T) {
					killDiskCase(t, e, mode, delay, expected, "--guest-dir", dir, "--window-entries", "1500", "--work", "disk")
				})
			}
		})
	}
}

func killDiskCase(t *testing.T, e ftEnv, mode string, delay time.Duration, expected guestcheck.Disk, guest ...string) {
	t.Helper()
	tmp := t.TempDir()
	pImg, bImg := filepath.Join(tmp, "disk.img"), filepath.Join(tmp, "disk.img")
	if mode == "nonshared" {
		bImg = filepath.Join(tmp, "backup-disk.img")
		newImage(t, bImg)
	}
	newImage(t, pImg)
	addr := freeAddr(t)
	p, b := startPairWith(t, e.Bin, addr, addr, t.TempDir(),
		[]string{"--disk", pImg, "--disk-mode", mode}, []string{"--disk", bImg, "--disk-mode", mode}, guest...)
	p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
	select {
	case <-time.After(delay):
	case <-p.done:
	}
	killed := p.kill9()
	if err := b.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("backup failed: %v\n%s", err, fttest.Tail(b.stderr.String(), 20))
	}
	pOut, bOut, bErr := p.stdout.String(), b.stdout.String(), b.stderr.String()
	survivor := pImg
	out, _, live, err := fttest.Junction(pOut, bOut, bErr)
	if err != nil {
		t.Fatalf("killed at %v: %v", delay, err)
	}
	if live {
		survivor = bImg
		t.Logf("killed at %v: %s", delay, fttest.Line(bErr, "LIVE at"))
	} else if killed && !strings.Contains(bErr, "finished as backup") {
		t.Fatalf("killed at %v: the backup neither went live nor saw the run end:\n%s", delay, fttest.Tail(bErr, 10))
	} else {
		t.Logf("killed at %v, after the primary's run had ended", delay)
	}
	got, err := guestcheck.ParseDisk(out)
	if err != nil {
		t.Fatalf("killed at %v: the guest's disk workload: %v\n%s", delay, err, fttest.Tail(out, 15))
	}
	if got != expected {
		t.Fatalf("killed at %v: the guest reported other checksums than the workload's (expected-disk.txt)\n%s", delay, fttest.Tail(out, 15))
	}
	want := []string{fmt.Sprintf("%s%x", guestcheck.MarkerDiskDone, expected.Combined), "FTKVM-GUEST: powering off"}
	for n, sum := range expected.Files {
		want = append(want, fmt.Sprintf("%s%d/%d %x", guestcheck.MarkerDiskStep, n+1, guestcheck.DiskFiles, sum))
	}
	for _, w := range want {
		if c := strings.Count(out, w); c != 1 {
			t.Fatalf("killed at %v: the outside saw %q %d times, want once\n%s", delay, w, c, fttest.Tail(out, 15))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := guestcheck.CheckImage(ctx, survivor, expected); err != nil {
		t.Fatalf("killed at %v: the %s image after the run: %v", delay, mode, err)
	}
	if mode == "nonshared" && survivor != bImg {
		// The backup wrote its copy as it replayed the whole run.
		if err := guestcheck.CheckImage(ctx, bImg, expected); err != nil {
			t.Fatalf("killed at %v, after the run ended: the backup's copy: %v", delay, err)
		}
	}
}

// TestLinuxRecordReplayDisk records the disk workload and replays it onto
// a second, blank image in non-shared mode (the replay performs the
// guest's writes on its own copy, as an FT backup with its own disk does,
// while its reads come from the log): the replay must reach the recorded
// fingerprint, and the copy must hold the guest's filesystem and files.
func TestLinuxRecordReplayDisk(t *testing.T) {
	dir := guestDir(t)
	bin := buildFtvm(t)
	expected, err := guestcheck.ExpectedDisk(filepath.Join(dir, "expected-disk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	logFile, recImg, repImg := filepath.Join(tmp, "disk.log"), filepath.Join(tmp, "rec.img"), filepath.Join(tmp, "rep.img")
	newImage(t, recImg)
	newImage(t, repImg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("ftvm %s: %v\n%s\n%s", args[0], err, fttest.Tail(string(out), 10), fttest.Tail(stderr, 10))
		}
		return string(out)
	}
	recOut := run("record", "-o", logFile, "--guest-dir", dir, "--disk", recImg, "--work", "disk")
	if got, err := guestcheck.ParseDisk(recOut); err != nil || got != expected {
		t.Fatalf("the recorded guest's disk workload: %v\n%s", err, fttest.Tail(recOut, 15))
	}
	repOut := run("replay", logFile, "--guest-dir", dir, "--work", "disk", "--disk", repImg, "--disk-mode", "nonshared")
	if want, got := lastLine(recOut), lastLine(repOut); !strings.HasPrefix(want, "fingerprint ") || want != got {
		t.Fatalf("record ended with %q, replay with %q", want, got)
	}
	for _, img := range []string{recImg, repImg} {
		if err := guestcheck.CheckImage(ctx, img, expected); err != nil {
			t.Errorf("%s: %v", filepath.Base(img), err)
		}
	}
	insp := run("inspect", logFile)
	if !strings.Contains(insp, "submit") {
		t.Errorf("the log has no device-write submissions:\n%s", fttest.Tail(insp, 30))
	}
}
