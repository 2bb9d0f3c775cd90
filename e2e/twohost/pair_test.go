package twohost

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/pairhost"
	"github.com/ftkvm/ftkvm/testbed"
)

// The FT pair across two emulated hosts (package internal/pairhost has
// the set-up: a private link, a shared directory standing for NFS, host
// death by SIGKILL of QEMU, partitions by cutting the link).

// env is what every two-host test needs: the ftvm binary and built guests.
type env = fttest.Env

var (
	envOnce sync.Once
	envV    env
	envErr  error
)

// require runs the two-host tests only where make test asks for them
// (FTKVM_TWOHOST=1, its two-host stage): they start emulated hosts of
// their own, so they never run inside one. FTKVM_TWOHOST=0 (make test's
// native pass) skips them; unset, they skip too, except under CI=true,
// where a skipped FT test would leave the core untested.
func require(t *testing.T) {
	t.Helper()
	switch os.Getenv("FTKVM_TWOHOST") {
	case "1":
		if err := testbed.Available(); err != nil {
			t.Fatalf("FTKVM_TWOHOST=1 but no emulated hosts: %v (run 'go run ./cmd/testbed setup')", err)
		}
		return
	case "0":
		t.Skip("two-host FT tests: run by make test's two-host stage (FTKVM_TWOHOST=1)")
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: the two-host FT tests must run: set FTKVM_TWOHOST=1 (make test's two-host stage does)")
	}
	t.Skip("two-host FT tests: set FTKVM_TWOHOST=1 to run them (make test does)")
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func setup(t *testing.T) env {
	t.Helper()
	require(t)
	envOnce.Do(func() { envV, envErr = fttest.Setup(repoRoot()) })
	if envErr != nil {
		t.Fatal(envErr)
	}
	return envV
}

// side wraps a pairhost.Side with test failures.
type side struct{ *pairhost.Side }

func (s side) out() string           { return s.Out() }
func (s side) log() string           { return s.Log() }
func (s side) status() int           { return s.Status() }
func (s side) exited() bool          { return s.Exited() }
func (s side) done() <-chan struct{} { return s.Done() }

func (s side) wait(t *testing.T, d time.Duration) {
	t.Helper()
	if err := s.Wait(d); err != nil {
		t.Fatalf("%v\n%s", err, fttest.Tail(s.Log(), 20))
	}
}

func (s side) waitLog(t *testing.T, sub string, d time.Duration) {
	t.Helper()
	if err := s.WaitLog(sub, d); err != nil {
		t.Fatalf("%v\n%s", err, fttest.Tail(s.Log(), 20))
	}
}

// pairOpts are the flags of one pair run.
type pairOpts struct {
	guest          []string // guest flags, both sides
	bGuest         []string // if set, the backup's guest flags instead
	pExtra, bExtra []string // flags of one side
	limit          time.Duration
}

// startPair boots the primary's host and the backup's (pairhost) in a
// fresh shared directory and starts ftvm in each.
func startPair(t *testing.T, e env, o pairOpts) (p, b side) {
	t.Helper()
	pr, err := pairhost.Start(context.Background(), pairhost.Options{
		Bin: e.Bin, Guest: o.guest, BGuest: o.bGuest, PExtra: o.pExtra, BExtra: o.bExtra, Dir: t.TempDir(), Limit: o.limit,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pr.Close)
	return side{pr.Primary}, side{pr.Backup}
}

// checkFailoverOutput fails t unless the outside world saw the reference
// with at most a duplicated overlap (fttest.CheckFailoverOutput).
func checkFailoverOutput(t *testing.T, ref, pOut, bOut string) {
	t.Helper()
	if err := fttest.CheckFailoverOutput(ref, pOut, bOut); err != nil {
		t.Fatal(err)
	}
}
