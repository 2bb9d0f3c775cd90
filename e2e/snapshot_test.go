package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/kvmtest"
)

// TestSnapshotRestoreBare saves the counter guest with `ftvm run
// --snapshot-after` and starts it again with `ftvm run --restore`: the
// console before the snapshot and after the restore, put together, is
// an uninterrupted run's. A damaged snapshot and one restored on another
// guest are refused.
func TestSnapshotRestoreBare(t *testing.T) {
	kvmtest.Require(t)
	bin := buildFtvm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	run := func(wantStatus int, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		status := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("ftvm %q: %v", args, err)
		}
		t.Logf("ftvm %q: status %d; stderr:\n%s", args, status, stderr.String())
		if status != wantStatus {
			t.Fatalf("ftvm %q: status %d, want %d", args, status, wantStatus)
		}
		return stdout.String()
	}
	whole := run(0, "run", "--bare", "counter")
	if !strings.HasSuffix(whole, "counter 300\n") {
		t.Fatalf("the uninterrupted run printed %q", fttestTail(whole))
	}
	snap := filepath.Join(t.TempDir(), "counter.snap")
	before := run(0, "run", "--bare", "counter", "--snapshot", snap, "--snapshot-after", "1s")
	after := run(0, "run", "--bare", "counter", "--restore", snap)
	if before == "" || after == "" || before+after != whole {
		t.Fatalf("before the snapshot %q, after the restore %q: together not the uninterrupted run's %q",
			fttestTail(before), fttestTail(after), fttestTail(whole))
	}
	if m, _ := filepath.Glob(snap + ".partial-*"); len(m) != 0 {
		t.Errorf("temporary files left beside the snapshot: %v", m)
	}

	data, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(bad, data[:len(data)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	run(7, "run", "--bare", "counter", "--restore", bad)
	run(1, "run", "--bare", "hello", "--restore", snap)
}

// fttestTail is the end of s, for messages.
func fttestTail(s string) string {
	if len(s) > 200 {
		return "..." + s[len(s)-200:]
	}
	return s
}
