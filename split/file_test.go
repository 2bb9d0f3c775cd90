package split_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/split"
)

const pair = "vm1"

func newArbiter(t testing.TB, dir, node string, gen uint64) *split.FileArbiter {
	t.Helper()
	a, err := split.NewFileArbiter(split.FileConfig{
		Dir: dir, Pair: pair, Node: node, Generation: gen,
		Timeout: 10 * time.Second, // generous: a loaded test machine is not a hung mount
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// mustLose checks that err is a loss to winner in generation gen, and that
// its message names the winner, the generation and the claim file.
func mustLose(t *testing.T, err error, a *split.FileArbiter, gen uint64, winner string) {
	t.Helper()
	var lost *split.LostError
	if !errors.As(err, &lost) || !errors.Is(err, split.ErrLost) {
		t.Fatalf("got %v, want a *LostError wrapping ErrLost", err)
	}
	if errors.Is(err, split.ErrUnreachable) || errors.Is(err, split.ErrCorrupt) {
		t.Fatalf("loss %v also claims to be another error", err)
	}
	if lost.Winner.Owner != winner || lost.Winner.Generation != gen || lost.Winner.Pair != pair {
		t.Fatalf("winner %+v, want %s in %s generation %d", lost.Winner, winner, pair, gen)
	}
	if lost.Path != a.ClaimPath(gen) {
		t.Fatalf("path %q, want %q", lost.Path, a.ClaimPath(gen))
	}
	for _, want := range []string{fmt.Sprintf("%q", winner), fmt.Sprintf("generation %d", gen), a.ClaimPath(gen)} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("message %q does not contain %q", err, want)
		}
	}
}

// dirNames lists dir, to check that nothing but claims is left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestSingleWinner(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := newArbiter(t, dir, "hostA", 1), newArbiter(t, dir, "hostB", 1)

	rec, err := a.Owner(ctx)
	if err != nil || rec.Owner != "" || rec.Generation != 1 || rec.Pair != pair {
		t.Fatalf("Owner before any claim = %+v, %v; want unclaimed generation 1", rec, err)
	}
	before := time.Now()
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	for _, arb := range []*split.FileArbiter{a, b} {
		rec, err := arb.Owner(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Owner != "hostA" || rec.Generation != 1 || rec.Pair != pair ||
			rec.When.Before(before.Add(-time.Second)) || rec.When.After(time.Now().Add(time.Second)) {
			t.Fatalf("Owner = %+v, want hostA, generation 1, claimed just now", rec)
		}
	}
	if got := dirNames(t, dir); len(got) != 1 || got[0] != "vm1.g1.claim" {
		t.Fatalf("directory holds %q, want only the claim", got)
	}
	if err := b.TestAndSet(ctx); err == nil {
		t.Fatal("second node also won")
	}
}

func TestLoserGetsErrLostNamingWinner(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := newArbiter(t, dir, "hostA", 1), newArbiter(t, dir, "hostB", 1)
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	err := b.TestAndSet(ctx)
	mustLose(t, err, b, 1, "hostA")
	t.Logf("loser's message: %v", err)
	// Losing again changes nothing.
	mustLose(t, b.TestAndSet(ctx), b, 1, "hostA")
}

func TestReclaimIsIdempotent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := newArbiter(t, dir, "hostA", 1)
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := a.Owner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatalf("re-claim by the winner: %v", err)
	}
	// Another arbiter of the same node (e.g. after the first one was
	// dropped) holds it too.
	if err := newArbiter(t, dir, "hostA", 1).TestAndSet(ctx); err != nil {
		t.Fatalf("re-claim by a new arbiter of the winner: %v", err)
	}
	again, err := a.Owner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatalf("record changed by re-claims: %+v, was %+v", again, first)
	}
	mustLose(t, newArbiter(t, dir, "hostB", 1).TestAndSet(ctx), a, 1, "hostA")
}

// Many nodes race for the same generation in one process, each with its
// own arbiter: exactly one wins and every other one names it.
func TestGoroutinesRaceOneWinner(t *testing.T) {
	const nodes, rounds = 32, 20
	ctx := context.Background()
	dir := t.TempDir()
	for gen := uint64(1); gen <= rounds; gen++ {
		arbs := make([]*split.FileArbiter, nodes)
		for i := range arbs {
			arbs[i] = newArbiter(t, dir, fmt.Sprintf("node%02d", i), gen)
		}
		errs := make([]error, nodes)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, a := range arbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = a.TestAndSet(ctx)
			}()
		}
		close(start)
		wg.Wait()

		winner := ""
		for i, err := range errs {
			if err == nil {
				if winner != "" {
					t.Fatalf("generation %d: both %s and node%02d won", gen, winner, i)
				}
				winner = fmt.Sprintf("node%02d", i)
			}
		}
		if winner == "" {
			t.Fatalf("generation %d: nobody won: %v", gen, errs)
		}
		for _, err := range errs {
			if err != nil {
				mustLose(t, err, arbs[0], gen, winner)
			}
		}
		if rec, err := arbs[0].Owner(ctx); err != nil || rec.Owner != winner {
			t.Fatalf("generation %d: Owner = %+v, %v; want %s", gen, rec, err, winner)
		}
	}
	if got := dirNames(t, dir); len(got) != rounds {
		t.Fatalf("directory holds %d files %q, want %d claims and no temporary files", len(got), got, rounds)
	}
}

func TestUnreachableStorageNeverWins(t *testing.T) {
	notRoot := os.Geteuid() != 0
	cases := []struct {
		name string
		// setup returns the Dir to use, and may return a function that
		// breaks it after the arbiter exists.
		setup func(t *testing.T) (dir string, breakIt func())
		skip  bool
		// readable: reading works, only claiming fails.
		readable bool
	}{
		{name: "missing directory", setup: func(t *testing.T) (string, func()) {
			return filepath.Join(t.TempDir(), "not-mounted"), nil
		}},
		{name: "path under a regular file", setup: func(t *testing.T) (string, func()) {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(file, "ft"), nil
		}},
		{name: "directory is a regular file", setup: func(t *testing.T) (string, func()) {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return file, nil
		}},
		{name: "directory removed", setup: func(t *testing.T) (string, func()) {
			dir := filepath.Join(t.TempDir(), "ft")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			return dir, func() {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{name: "directory not writable", skip: !notRoot, readable: true, setup: func(t *testing.T) (string, func()) {
			dir := filepath.Join(t.TempDir(), "ro")
			if err := os.Mkdir(dir, 0o555); err != nil {
				t.Fatal(err)
			}
			return dir, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skip("running as root: permissions are not enforced")
			}
			ctx := context.Background()
			dir, breakIt := tc.setup(t)
			a := newArbiter(t, dir, "hostA", 1)
			if breakIt != nil {
				breakIt()
			}
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, split.ErrUnreachable) || errors.Is(err, split.ErrLost) {
					t.Fatalf("%s: got %v, want ErrUnreachable only", what, err)
				}
				if !strings.Contains(err.Error(), dir) {
					t.Fatalf("%s: message %q does not name %s", what, err, dir)
				}
			}
			err := a.TestAndSet(ctx)
			check("TestAndSet", err)
			t.Logf("TestAndSet: %v", err)
			if tc.readable {
				if rec, err := a.Owner(ctx); err != nil || rec.Owner != "" {
					t.Fatalf("Owner = %+v, %v; want unclaimed", rec, err)
				}
			} else {
				_, err = a.Owner(ctx)
				check("Owner", err)
				_, err = a.Latest(ctx)
				check("Latest", err)
			}
			_, err = a.Advance(ctx)
			check("Advance", err)
			if a.Generation() != 1 {
				t.Fatalf("failed Advance moved to generation %d", a.Generation())
			}
			if _, err := os.Lstat(a.ClaimPath(1)); err == nil {
				t.Fatal("a claim file exists although the storage was unreachable")
			}
		})
	}
}

func TestCorruptRecordIsNotAWin(t *testing.T) {
	// A valid record for generation 2, to be planted where it does not belong.
	src := t.TempDir()
	w := newArbiter(t, src, "hostA", 2)
	if err := w.TestAndSet(context.Background()); err != nil {
		t.Fatal(err)
	}
	valid, err := os.ReadFile(w.ClaimPath(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a claim record:\n%s", valid)
	other, err := split.NewFileArbiter(split.FileConfig{Dir: src, Pair: "vm2", Node: "hostA", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.TestAndSet(context.Background()); err != nil {
		t.Fatal(err)
	}
	otherPair, err := os.ReadFile(other.ClaimPath(1))
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		plant func(path string) error
	}{
		{"garbage", func(p string) error { return os.WriteFile(p, []byte("\x00\xffnot a record\n"), 0o644) }},
		{"empty", func(p string) error { return os.WriteFile(p, nil, 0o644) }},
		{"truncated", func(p string) error { return os.WriteFile(p, valid[:len(valid)/2], 0o644) }},
		{"flipped owner byte", func(p string) error {
			return os.WriteFile(p, []byte(strings.Replace(string(valid), "hostA", "hostB", 1)), 0o644)
		}},
		{"oversized", func(p string) error { return os.WriteFile(p, []byte(strings.Repeat("x\n", 4000)), 0o644) }},
		{"record of another generation", func(p string) error { return os.WriteFile(p, valid, 0o644) }},
		{"record of another pair", func(p string) error { return os.WriteFile(p, otherPair, 0o644) }},
		{"a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			a := newArbiter(t, dir, "hostA", 1)
			if err := tc.plant(a.ClaimPath(1)); err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, split.ErrCorrupt) || errors.Is(err, split.ErrLost) || errors.Is(err, split.ErrUnreachable) {
					t.Fatalf("%s: got %v, want ErrCorrupt only", what, err)
				}
				for _, want := range []string{a.ClaimPath(1), "generation 1"} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("%s: message %q does not contain %q", what, err, want)
					}
				}
			}
			err := a.TestAndSet(ctx)
			check("TestAndSet", err)
			t.Logf("TestAndSet: %v", err)
			_, err = a.Owner(ctx)
			check("Owner", err)
			_, err = a.Latest(ctx)
			check("Latest", err)
			check("other node's TestAndSet", newArbiter(t, dir, "hostB", 1).TestAndSet(ctx))
		})
	}
}

// The normal life of a pair: failover in generation 1, re-protection,
// failover in generation 2.
func TestAdvanceAfterFailover(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	primary, backup := newArbiter(t, dir, "hostA", 1), newArbiter(t, dir, "hostB", 1)
	if err := backup.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	mustLose(t, primary.TestAndSet(ctx), primary, 1, "hostB")

	next, err := backup.Advance(ctx)
	if err != nil || next != 2 || backup.Generation() != 2 {
		t.Fatalf("Advance = %d, %v (generation %d); want 2", next, err, backup.Generation())
	}
	if rec, err := backup.Owner(ctx); err != nil || rec.Owner != "" || rec.Generation != 2 {
		t.Fatalf("Owner after Advance = %+v, %v; want generation 2 unclaimed", rec, err)
	}
	// The new backup, hostC, joins at generation 2; then hostB dies and
	// hostC goes live.
	newBackup := newArbiter(t, dir, "hostC", 2)
	if err := newBackup.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	mustLose(t, backup.TestAndSet(ctx), backup, 2, "hostC")
	// The old primary, still at generation 1, can never come back.
	mustLose(t, primary.TestAndSet(ctx), primary, 1, "hostB")
	if _, err := primary.Advance(ctx); !errors.Is(err, split.ErrLost) || primary.Generation() != 1 {
		t.Fatalf("loser's Advance = %v, generation %d; want ErrLost and generation 1", err, primary.Generation())
	}
}

// A backup replaced without a failover (say, moved to another host) may be
// cut off and never learn it; it must not be able to win afterwards.
func TestAdvanceFencesReplacedBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	primary, oldBackup := newArbiter(t, dir, "hostA", 1), newArbiter(t, dir, "hostB", 1)
	next, err := primary.Advance(ctx)
	if err != nil || next != 2 {
		t.Fatalf("Advance = %d, %v; want 2", next, err)
	}
	mustLose(t, oldBackup.TestAndSet(ctx), oldBackup, 1, "hostA")
	// Twice more: generations 3 and 4, each unclaimed until advanced past.
	for want := uint64(3); want <= 4; want++ {
		if next, err := primary.Advance(ctx); err != nil || next != want {
			t.Fatalf("Advance = %d, %v; want %d", next, err, want)
		}
	}
	for gen := uint64(1); gen <= 3; gen++ {
		if rec, err := newArbiter(t, dir, "hostZ", gen).Owner(ctx); err != nil || rec.Owner != "hostA" {
			t.Fatalf("generation %d: Owner = %+v, %v; want hostA", gen, rec, err)
		}
	}
}

func TestAdvanceRefusesClaimedNextGeneration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := newArbiter(t, dir, "hostA", 1)
	if err := newArbiter(t, dir, "hostX", 2).TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := a.Advance(ctx)
	if !errors.Is(err, split.ErrCorrupt) || !strings.Contains(err.Error(), `"hostX"`) || !strings.Contains(err.Error(), "generation 2") {
		t.Fatalf("Advance into a claimed generation = %v; want ErrCorrupt naming hostX and generation 2", err)
	}
	if a.Generation() != 1 {
		t.Fatalf("generation %d after a failed Advance, want 1", a.Generation())
	}
}

func TestLatest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := newArbiter(t, dir, "hostA", 1)
	if rec, err := a.Latest(ctx); err != nil || rec != (split.Record{Pair: pair}) {
		t.Fatalf("Latest with no claims = %+v, %v", rec, err)
	}
	for range 2 {
		if _, err := a.Advance(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Lookalikes that are not claims of this pair.
	for _, name := range []string{"vm10.g9.claim", "vm1.g09.claim", "vm1.g9.claim.bak", ".vm1.g9.x.tmp", "vm1.gx.claim"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := a.Latest(ctx)
	if err != nil || rec.Owner != "hostA" || rec.Generation != 2 {
		t.Fatalf("Latest = %+v, %v; want hostA's claim of generation 2", rec, err)
	}
}

func TestConfigValidation(t *testing.T) {
	good := split.FileConfig{Dir: "/mnt/ft", Pair: "vm-1.prod_2", Node: "host-a:7000", Generation: 1}
	if _, err := split.NewFileArbiter(good); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	cases := map[string]func(c *split.FileConfig){
		"no dir":            func(c *split.FileConfig) { c.Dir = "" },
		"relative dir":      func(c *split.FileConfig) { c.Dir = "mnt/ft" },
		"no pair":           func(c *split.FileConfig) { c.Pair = "" },
		"pair with slash":   func(c *split.FileConfig) { c.Pair = "a/b" },
		"pair with dot":     func(c *split.FileConfig) { c.Pair = ".vm" },
		"pair too long":     func(c *split.FileConfig) { c.Pair = strings.Repeat("v", 201) },
		"no node":           func(c *split.FileConfig) { c.Node = "" },
		"node with space":   func(c *split.FileConfig) { c.Node = "host a" },
		"node with newline": func(c *split.FileConfig) { c.Node = "host\nowner: evil" },
		"node not utf-8":    func(c *split.FileConfig) { c.Node = "host\xff" },
		"generation 0":      func(c *split.FileConfig) { c.Generation = 0 },
		"last generation":   func(c *split.FileConfig) { c.Generation = ^uint64(0) },
		"negative timeout":  func(c *split.FileConfig) { c.Timeout = -time.Second },
	}
	for name, mutate := range cases {
		c := good
		mutate(&c)
		if _, err := split.NewFileArbiter(c); !errors.Is(err, split.ErrInvalidConfig) {
			t.Errorf("%s: got %v, want ErrInvalidConfig", name, err)
		}
	}
}

// A FIFO at the claim's path (planted, or left by a tool gone wrong): opening
// it for reading used to wait for a writer forever, so the first operation
// timed out with ErrUnreachable and its goroutine, stuck in open(2), kept
// the arbiter's storage slot: every later operation failed the same way.
// It must be refused at once as not a regular file, by every operation,
// and never claimed; and so must a socket, which open(2) refuses.
func TestSpecialFileAtClaimPathIsRefusedPromptly(t *testing.T) {
	for _, kind := range []struct {
		name  string
		mode  fs.FileMode
		plant func(t *testing.T, path string) error
	}{
		{"fifo", fs.ModeNamedPipe, func(t *testing.T, path string) error {
			t.Cleanup(func() {
				// Release any open(2) still waiting for a writer, so that
				// the directory can be removed.
				for i := 0; i < 10; i++ {
					if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
			return syscall.Mkfifo(path, 0o644)
		}},
		{"socket", fs.ModeSocket, func(t *testing.T, path string) error {
			l, err := net.Listen("unix", path)
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		}},
	} {
		t.Run(kind.name, func(t *testing.T) {
			dir := t.TempDir()
			arbiter := func(node string) *split.FileArbiter {
				a, err := split.NewFileArbiter(split.FileConfig{Dir: dir, Pair: pair, Node: node, Generation: 1, Timeout: 3 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			a := arbiter("hostA")
			path := a.ClaimPath(1)
			if err := kind.plant(t, path); err != nil {
				t.Skipf("cannot make a %s here: %v", kind.name, err)
			}
			ctx := context.Background()
			for _, op := range []struct {
				name string
				call func() error
			}{
				{"TestAndSet", func() error { return a.TestAndSet(ctx) }},
				{"Owner", func() error { _, err := a.Owner(ctx); return err }},
				{"Latest", func() error { _, err := a.Latest(ctx); return err }},
				{"TestAndSet again", func() error { return a.TestAndSet(ctx) }},
				{"other node's TestAndSet", func() error { return arbiter("hostB").TestAndSet(ctx) }},
				{"Advance", func() error { _, err := a.Advance(ctx); return err }},
			} {
				start := time.Now()
				err := op.call()
				took := time.Since(start)
				if !errors.Is(err, split.ErrCorrupt) || errors.Is(err, split.ErrUnreachable) || errors.Is(err, split.ErrLost) {
					t.Fatalf("%s after %v: got %v, want ErrCorrupt only", op.name, took, err)
				}
				if !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), path) {
					t.Fatalf("%s: message %q does not say that %s is not a regular file", op.name, err, path)
				}
				if took > time.Second {
					t.Fatalf("%s took %v", op.name, took)
				}
				t.Logf("%s: %v in %v", op.name, err, took)
			}
			if st, err := os.Lstat(path); err != nil || st.Mode().Type() != kind.mode {
				t.Fatalf("the %s was replaced: %v %v", kind.name, st, err)
			}
			if a.Generation() != 1 {
				t.Fatalf("advanced to generation %d past an unclaimed one", a.Generation())
			}
		})
	}
}
