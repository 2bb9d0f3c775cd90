package twohost

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/internal/fttest"
)

// points returns how many kill points a test runs: quick in make test,
// soak in make soak (FTKVM_SOAK=1), or $FTKVM_TWOHOST_<name> (0 skips).
func points(t *testing.T, name string, quick, soak int) int {
	return fttest.Points(t, "FTKVM_TWOHOST_"+name, quick, soak)
}

func seeded(t *testing.T) *rand.Rand {
	seed := time.Now().UnixNano()
	if v := os.Getenv("FTKVM_TWOHOST_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d (FTKVM_TWOHOST_SEED repeats it)", seed)
	return rand.New(rand.NewSource(seed))
}

// killPrimaryHost runs one pair and kills the primary's host after delay
// (counted from the guest's start under protection): the backup must go
// live, finish the guest, and the outside must see the undisturbed
// output with at most a duplicated overlap.
func killPrimaryHost(t *testing.T, e env, ref string, delay time.Duration, guest ...string) {
	t.Helper()
	p, b := startPair(t, e, pairOpts{guest: guest})
	p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
	select {
	case <-time.After(delay):
	case <-p.done():
	}
	killed := !p.exited()
	p.Kill()
	b.wait(t, 4*time.Minute)
	pOut, bOut, bLog := p.out(), b.out(), b.log()
	if b.status() != 0 {
		t.Fatalf("backup exited %d (host: %v)\nbackup log:\n%s\nprimary log:\n%s", b.status(), b.HostErr(), fttest.Tail(bLog, 25), fttest.Tail(p.log(), 10))
	}
	if !strings.Contains(p.log(), "mutual TLS 1.3") || !strings.Contains(bLog, "mutual TLS 1.3") {
		t.Fatalf("the pair did not run mutual TLS across the hosts:\n%s\n%s", fttest.Tail(p.log(), 5), fttest.Tail(bLog, 5))
	}
	switch {
	case strings.Contains(bLog, "WON the test-and-set"):
		t.Logf("primary host killed at %v: primary released %d bytes, backup wrote %d; %s; %s", delay, len(pOut), len(bOut),
			fttest.Line(bLog, "log ended"), fttest.Line(bLog, "LIVE at"))
	case killed:
		t.Fatalf("the primary's host was killed at %v and the backup did not go live:\n%s", delay, fttest.Tail(bLog, 20))
	default:
		t.Logf("the primary finished before the kill at %v", delay)
	}
	checkFailoverOutput(t, ref, pOut, bOut)
}

// TestHostDeathBare kills the primary's host at random points of two bare
// guests: one printing at logged TSC reads, one under a 1 kHz timer whose
// interrupts the backup replays at state-transfer landmarks.
func TestHostDeathBare(t *testing.T) {
	e := setup(t)
	n := points(t, "BARE_POINTS", 6, 20)
	rng := seeded(t)
	cases := []struct {
		name, image string
		spec        ftguest.Spec
		maxDelay    time.Duration
	}{
		{"chatter", e.Chat, e.ChatS, 3 * time.Second},
		{"chatter_ticks", e.Ticks, e.TicksS, 2 * time.Second},
	}
	for i := 0; i < n; i++ {
		c := cases[i%len(cases)]
		delay := time.Duration(rng.Int63n(int64(c.maxDelay)))
		if i < len(cases) {
			delay = 0 // as the guest starts
		}
		t.Run(fmt.Sprintf("%s/%d", c.name, i), func(t *testing.T) {
			killPrimaryHost(t, e, ftguest.Expected(c.spec), delay, "--image", c.image)
		})
	}
}

// TestHostDeathLinux kills the primary's host at random points of the
// Linux guest's boot and workload: once the outside has seen a randomly
// chosen line of the boot or the workload, so every kill lands while the
// guest runs (it powers off a few seconds after its start). The guest's
// output depends on logged time, so the check is the junction: the backup
// re-sends from within what the primary released, and the outside sees
// every marker once.
func TestHostDeathLinux(t *testing.T) {
	e := setup(t)
	n := points(t, "LINUX_POINTS", 2, 3)
	dir := guestDir(t)
	rng := seeded(t)
	markers := []string{"FTKVM-GUEST: init started", "FTKVM-GUEST: step 10/10", "FTKVM-GUEST: workload done", "FTKVM-GUEST: powering off"}
	triggers := []string{"Linux version", "Serial: 8250", "Run /init as init process", "FTKVM-GUEST: init started"}
	for k := 1; k <= 9; k++ {
		triggers = append(triggers, fmt.Sprintf("FTKVM-GUEST: step %d/10", k))
	}
	for i := 0; i < n; i++ {
		trigger := triggers[rng.Intn(len(triggers))]
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p, b := startPair(t, e, pairOpts{guest: []string{"--guest-dir", dir, "--window-entries", "1500"}, limit: 7 * time.Minute})
			p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
			for !strings.Contains(p.out(), trigger) {
				if p.exited() {
					t.Fatalf("the primary ended before the outside saw %q (exit %d)\n%s", trigger, p.status(), fttest.Tail(p.log(), 10))
				}
				time.Sleep(10 * time.Millisecond)
			}
			p.Kill()
			b.wait(t, 5*time.Minute)
			pOut, bOut, bLog := p.out(), b.out(), b.log()
			if b.status() != 0 {
				t.Fatalf("backup exited %d (host: %v)\n%s", b.status(), b.HostErr(), fttest.Tail(bLog, 25))
			}
			out, from, live, err := fttest.Junction(pOut, bOut, bLog)
			switch {
			case !live:
				t.Fatalf("killed after %q: the backup did not go live:\n%s", trigger, fttest.Tail(bLog, 15))
			case err != nil:
				t.Fatalf("killed after %q: %v", trigger, err)
			}
			t.Logf("primary host killed after %q: primary released %d bytes, backup re-sent from %d and wrote %d; %s", trigger, len(pOut), from, len(bOut), fttest.Line(bLog, "LIVE at"))
			for _, want := range markers {
				if strings.Count(out, want) != 1 {
					t.Fatalf("killed after %q: the outside saw %q %d times, want once\n%s", trigger, want, strings.Count(out, want), fttest.Tail(out, 10))
				}
			}
		})
	}
}

// TestBackupHostDeath kills the backup's host: the primary declares it
// lost, wins the test-and-set and finishes alone with all of its output.
func TestBackupHostDeath(t *testing.T) {
	e := setup(t)
	ref := ftguest.Expected(e.ChatS)
	p, b := startPair(t, e, pairOpts{guest: []string{"--image", e.Chat}})
	p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
	time.Sleep(time.Second)
	b.Kill()
	p.wait(t, 4*time.Minute)
	pLog := p.log()
	if p.status() != 0 || !strings.Contains(pLog, "WON the test-and-set") {
		t.Fatalf("the primary must win and finish alone (exit %d)\n%s", p.status(), fttest.Tail(pLog, 15))
	}
	if p.out() != ref {
		t.Fatalf("the primary's output is %d bytes, want all %d", len(p.out()), len(ref))
	}
	t.Logf("%s", fttest.Line(pLog, "WON the test-and-set"))
}

// TestPartition cuts the link between the hosts at a few points: both
// sides lose each other, both try the test-and-set, and exactly one goes
// live every time. The other halts; the outside sees one execution.
func TestPartition(t *testing.T) {
	e := setup(t)
	ref := ftguest.Expected(e.ChatS)
	for i, delay := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p, b := startPair(t, e, pairOpts{guest: []string{"--image", e.Chat}})
			p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
			time.Sleep(delay)
			if err := p.Host.SetLink(false); err != nil {
				t.Fatal(err)
			}
			p.wait(t, 4*time.Minute)
			b.wait(t, 4*time.Minute)
			pLog, bLog := p.log(), b.log()
			pWon, bWon := strings.Contains(pLog, "WON the test-and-set"), strings.Contains(bLog, "WON the test-and-set")
			t.Logf("cut at %v: primary won %v (exit %d), backup won %v (exit %d)", delay, pWon, p.status(), bWon, b.status())
			if pWon == bWon {
				t.Fatalf("exactly one side must go live: primary %v, backup %v\nprimary:\n%s\nbackup:\n%s", pWon, bWon, fttest.Tail(pLog, 12), fttest.Tail(bLog, 12))
			}
			if pWon {
				if p.status() != 0 || p.out() != ref || b.out() != "" {
					t.Fatalf("primary won: it must finish with all output (%d of %d bytes, exit %d) and the backup release nothing (%d bytes)", len(p.out()), len(ref), p.status(), len(b.out()))
				}
				return
			}
			if b.status() != 0 || p.status() == 0 {
				t.Fatalf("backup won: it must finish (exit %d) and the primary halt (exit %d)", b.status(), p.status())
			}
			checkFailoverOutput(t, ref, p.out(), b.out())
		})
	}
}

// TestStorageLoss makes the shared storage unreachable, then kills the
// primary's host: the backup cannot run the test-and-set and must not go
// live. Nobody goes live twice.
func TestStorageLoss(t *testing.T) {
	e := setup(t)
	ref := ftguest.Expected(e.ChatS)
	p, b := startPair(t, e, pairOpts{guest: []string{"--image", e.Chat}})
	p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
	time.Sleep(800 * time.Millisecond)
	split := filepath.Join(p.Dir, "split")
	if err := os.Rename(split, split+".gone"); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	b.wait(t, 4*time.Minute)
	bLog := b.log()
	if b.status() == 0 || strings.Contains(bLog, "WON") || !strings.Contains(bLog, "NOT going live") {
		t.Fatalf("the backup must not go live without the storage (exit %d)\n%s", b.status(), fttest.Tail(bLog, 12))
	}
	if b.out() != "" || !strings.HasPrefix(ref, p.out()) {
		t.Fatalf("wrong output: backup %d bytes (want 0), primary's not a prefix of the reference", len(b.out()))
	}
	t.Logf("%s", fttest.Line(bLog, "NOT going live"))
}

// TestMismatchRefused starts a backup whose VM differs (memory, image) on
// the other host: it is refused with a clear error and the primary runs
// unprotected.
func TestMismatchRefused(t *testing.T) {
	e := setup(t)
	for _, c := range []struct {
		name   string
		backup []string
	}{
		{"memory", []string{"--image", e.Chat, "--mem", "64M"}},
		{"image", []string{"--image", e.Ticks}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, b := startPair(t, e, pairOpts{guest: []string{"--image", e.Chat}, bGuest: c.backup, pExtra: []string{"--wait-backup", "15s"}})
			b.wait(t, 3*time.Minute)
			p.wait(t, 4*time.Minute)
			if b.status() == 0 || !strings.Contains(b.log(), "differs from the primary's") {
				t.Fatalf("the backup was not refused clearly (exit %d):\n%s", b.status(), fttest.Tail(b.log(), 10))
			}
			if !strings.Contains(p.log(), "REFUSED the backup") || !strings.Contains(p.log(), "running UNPROTECTED") {
				t.Fatalf("the primary did not refuse the backup and run unprotected:\n%s", fttest.Tail(p.log(), 10))
			}
		})
	}
}
