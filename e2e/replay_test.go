package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
)

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestLinuxRecordReplay records the example guest's boot, workload and
// power-off with `ftvm record`, replays it with `ftvm replay`, and requires
// both to print the same final fingerprint (the acceptance). The
// recording runs in verify mode with periodic fingerprints, so a replay
// that strays is stopped near the cause.
func TestLinuxRecordReplay(t *testing.T) {
	dir := guestDir(t)
	bin := buildFtvm(t)
	logFile := filepath.Join(t.TempDir(), "linux.log")
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	run := func(args ...string) (string, string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		t.Logf("ftvm %s: %v in %v\n%s", args[0], err, time.Since(start), stderr.String())
		if err != nil {
			t.Fatalf("ftvm %s failed: %v\nstdout tail:\n%s", args[0], err, fttest.Tail(stdout.String(), 20))
		}
		return stdout.String(), stderr.String()
	}
	recOut, _ := run("record", "-o", logFile, "--guest-dir", dir, "--fingerprint-every", "2000", "--verify")
	if !strings.Contains(recOut, "FTKVM-GUEST: workload done") {
		t.Fatalf("the recorded guest did not finish its workload:\n%s", fttest.Tail(recOut, 20))
	}
	repOut, repErr := run("replay", logFile, "--guest-dir", dir)
	want, got := lastLine(recOut), lastLine(repOut)
	if !strings.HasPrefix(want, "fingerprint ") || want != got {
		t.Fatalf("record ended with %q, replay with %q", want, got)
	}
	if !strings.Contains(repErr, "replay reached the recorded end state") {
		t.Errorf("replay did not report reaching the end state:\n%s", repErr)
	}
	insp, _ := run("inspect", logFile)
	if !strings.Contains(insp, "deliver+landmark") || !strings.Contains(insp, "power off") {
		t.Errorf("inspect output lacks expected rows:\n%s", insp)
	}
}
