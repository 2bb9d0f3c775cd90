package e2e

import (
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
)

// The FT pair end to end: real ftvm processes on loopback, a real
// directory for the split-brain test-and-set, kill -9 and a TCP proxy that
// stops forwarding. Pairs run one after the other (the machine has two
// CPUs: one per side).

// ftEnv is what every FT test needs: the ftvm binary and built guests.
type ftEnv = fttest.Env

var (
	ftOnce sync.Once
	ftE    ftEnv
	ftErr  error
)

func setupFT(t *testing.T) ftEnv {
	t.Helper()
	kvmtest.Require(t)
	ftOnce.Do(func() { ftE, ftErr = fttest.Setup(repoRoot(t)) })
	if ftErr != nil {
		t.Fatal(ftErr)
	}
	return ftE
}

// side is one running ftvm process.
type side struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuf
	done           chan struct{}
	err            error
	started        time.Time
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startSide(t *testing.T, bin, name string, args ...string) *side {
	t.Helper()
	s := &side{name: name, done: make(chan struct{})}
	s.cmd = exec.Command(bin, append([]string{name}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	s.cmd.Stdin = nil
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	s.started = time.Now()
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

func (s *side) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(d):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("%s did not finish within %v\nstderr:\n%s", s.name, d, fttest.Tail(s.stderr.String(), 30))
		return nil
	}
}

// waitLog waits until the side's stderr contains sub.
func (s *side) waitLog(t *testing.T, sub string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(s.stderr.String(), sub) {
		select {
		case <-s.done:
			t.Fatalf("%s ended before logging %q: %v\n%s", s.name, sub, s.err, fttest.Tail(s.stderr.String(), 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v\n%s", s.name, sub, d, fttest.Tail(s.stderr.String(), 20))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (s *side) kill9() bool {
	select {
	case <-s.done:
		return false // already gone
	default:
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	return true
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// makeCerts makes a pair's CA and node certificates with `ftvm certs` in
// a new temporary directory of the test, and returns the directory (for
// --tls-dir).
func makeCerts(t *testing.T, bin string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if out, err := exec.Command(bin, "certs", dir).CombinedOutput(); err != nil {
		t.Fatalf("ftvm certs: %v\n%s", err, out)
	}
	return dir
}

// pair starts a backup and a primary for the guest args, over mutual TLS
// with certificates from makeCerts; the backup dials backupAddr (the
// primary's address, or a proxy in front of it).
func startPair(t *testing.T, bin string, primaryAddr, backupAddr, splitDir string, guest ...string) (p, b *side) {
	t.Helper()
	return startPairWith(t, bin, primaryAddr, backupAddr, splitDir, nil, nil, guest...)
}

// startPairWith is startPair with extra flags for each side.
func startPairWith(t *testing.T, bin string, primaryAddr, backupAddr, splitDir string, pExtra, bExtra []string, guest ...string) (p, b *side) {
	t.Helper()
	common := append([]string{"--tls-dir", makeCerts(t, bin), "--split-dir", splitDir, "--status-every", "1s", "--claim-timeout", "1s"}, guest...)
	b = startSide(t, bin, "backup", append(append([]string{"--connect", backupAddr}, bExtra...), common...)...)
	p = startSide(t, bin, "primary", append(append([]string{"--listen", primaryAddr, "--wait-backup", "30s"}, pExtra...), common...)...)
	return p, b
}

// checkFailoverOutput fails t unless the outside world saw the reference
// with at most a duplicated overlap (fttest.CheckFailoverOutput).
func checkFailoverOutput(t *testing.T, ref, pOut, bOut string) {
	t.Helper()
	if err := fttest.CheckFailoverOutput(ref, pOut, bOut); err != nil {
		t.Fatal(err)
	}
}

// killPrimaryCase runs one pair and SIGKILLs the primary after delay; the
// backup must go live and finish the guest with no output lost.
func killPrimaryCase(t *testing.T, e ftEnv, ref string, delay, limit time.Duration, guest ...string) {
	t.Helper()
	addr := freeAddr(t)
	p, b := startPair(t, e.Bin, addr, addr, t.TempDir(), guest...)
	p.waitLog(t, "booting the guest PROTECTED", 2*time.Minute)
	select {
	case <-time.After(delay):
	case <-p.done:
	}
	if !p.kill9() {
		t.Logf("the primary finished before the kill at %v", delay)
	}
	berr := b.wait(t, limit)
	pOut, bOut, bErr := p.stdout.String(), b.stdout.String(), b.stderr.String()
	if berr != nil {
		t.Fatalf("backup failed: %v\nbackup stderr:\n%s\nprimary stderr:\n%s", berr, fttest.Tail(bErr, 30), fttest.Tail(p.stderr.String(), 20))
	}
	if strings.Contains(bErr, "WON the test-and-set") {
		t.Logf("killed at %v: primary released %d bytes, backup %d bytes; %s", delay, len(pOut), len(bOut), fttest.Line(bErr, "LIVE at"))
	} else if len(pOut) != len(ref) {
		t.Fatalf("the backup did not go live after the primary was killed at %v\n%s", delay, fttest.Tail(bErr, 20))
	}
	checkFailoverOutput(t, ref, pOut, bOut)
}

// TestFTKillPrimaryBare kills the primary with SIGKILL at random points of
// two bare guests (a printing guest driven by logged TSC reads, and one
// under a 1 kHz timer interrupt whose deliveries replay at landmarks).
func TestFTKillPrimaryBare(t *testing.T) {
	e := setupFT(t)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	cases := []struct {
		name, image string
		spec        ftguest.Spec
		n           int
		maxDelay    time.Duration
		limit       time.Duration
	}{
		// Sized for an emulated KVM host (about 30 s a case there; the
		// limits leave room for a loaded machine).
		// make test samples 3 and 2 points, make soak runs 10 and 6.
		{"chatter", e.Chat, e.ChatS, fttest.Points(t, "FTKVM_E2E_CHATTER_POINTS", 3, 10), 2500 * time.Millisecond, 3 * time.Minute},
		{"chatter_ticks", e.Ticks, e.TicksS, fttest.Points(t, "FTKVM_E2E_TICKS_POINTS", 2, 6), 1500 * time.Millisecond, 3 * time.Minute},
	}
	for _, c := range cases {
		ref := ftguest.Expected(c.spec)
		for i := 0; i < c.n; i++ {
			delay := time.Duration(rng.Int63n(int64(c.maxDelay)))
			if i == 0 {
				delay = 0 // as the guest starts
			}
			t.Run(fmt.Sprintf("%s/%d", c.name, i), func(t *testing.T) {
				killPrimaryCase(t, e, ref, delay, c.limit, "--image", c.image)
			})
		}
	}
	// Built-in guests whose one output line depends on the logged inputs.
	builtin := fttest.Points(t, "FTKVM_E2E_BUILTIN_POINTS", 1, 2)
	for _, g := range []struct{ name, marker string }{{"rdtsc_loop", "rdtsc_loop: sum="}, {"pit_read", "pit_read: sum="}} {
		for i := 0; i < builtin; i++ {
			delay := time.Duration(rng.Int63n(int64(150 * time.Millisecond)))
			t.Run(fmt.Sprintf("%s/%d", g.name, i), func(t *testing.T) {
				killJunctionCase(t, e, delay, 3*time.Minute, []string{g.marker}, "--bare", g.name)
			})
		}
	}
}

// TestFTKillBackup kills the backup: the primary wins the test-and-set and
// finishes alone, releasing all of its output.
func TestFTKillBackup(t *testing.T) {
	e := setupFT(t)
	ref := ftguest.Expected(e.ChatS)
	for i, delay := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			addr := freeAddr(t)
			p, b := startPair(t, e.Bin, addr, addr, t.TempDir(), "--image", e.Chat)
			p.waitLog(t, "booting the guest PROTECTED", 2*time.Minute)
			time.Sleep(delay)
			if !b.kill9() {
				t.Fatalf("the backup ended before the kill:\n%s", b.stderr.String())
			}
			if err := p.wait(t, 3*time.Minute); err != nil {
				t.Fatalf("primary failed: %v\n%s", err, fttest.Tail(p.stderr.String(), 20))
			}
			pErr := p.stderr.String()
			if !strings.Contains(pErr, "BACKUP LOST") || !strings.Contains(pErr, "running UNPROTECTED") {
				t.Fatalf("the primary did not report losing its backup and running unprotected:\n%s", fttest.Tail(pErr, 20))
			}
			if p.stdout.String() != ref {
				t.Fatalf("the primary's output differs from the reference (%d vs %d bytes)", len(p.stdout.String()), len(ref))
			}
		})
	}
}

// proxy forwards TCP connections from a listener to target until cut,
// after which it keeps the connections open but forwards nothing: a
// network partition with both sides alive.
type proxy struct {
	l      net.Listener
	target string
	cut    atomic.Bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &proxy{l: l, target: target}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go px.serve(t, c)
		}
	}()
	return px
}

func (px *proxy) serve(t *testing.T, c net.Conn) {
	var u net.Conn
	var err error
	for i := 0; i < 100; i++ { // the primary may not listen yet
		if u, err = net.Dial("tcp", px.target); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		c.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if px.cut.Load() {
				// Partitioned: swallow everything, keep the sockets open.
				if err != nil {
					return
				}
				continue
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(u, c)
	pipe(c, u)
	time.Sleep(time.Minute) // keep both sockets open past the test's end of interest
	c.Close()
	u.Close()
}

// TestFTPartition cuts the network between the two while both run: each
// declares the other dead and races for the test-and-set; exactly one goes
// live, the other halts, and the outside sees no output lost. With equal
// timeouts the backup tends to claim first; the cases with a slower backup
// detector make the primary win the race.
func TestFTPartition(t *testing.T) {
	e := setupFT(t)
	ref := ftguest.Expected(e.ChatS)
	cases := []struct {
		delay    time.Duration
		bTimeout string
	}{{500 * time.Millisecond, "1s"}, {1200 * time.Millisecond, "1s"}, {2 * time.Second, "1s"}, {300 * time.Millisecond, "2500ms"}, {1500 * time.Millisecond, "2500ms"}}
	for i, c := range cases {
		delay := c.delay
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			addr := freeAddr(t)
			px := startProxy(t, addr)
			p, b := startPairWith(t, e.Bin, addr, px.l.Addr().String(), t.TempDir(), nil, []string{"--ft-timeout", c.bTimeout}, "--image", e.Chat)
			p.waitLog(t, "booting the guest PROTECTED", 2*time.Minute)
			time.Sleep(delay)
			px.cut.Store(true)
			perr := p.wait(t, 3*time.Minute)
			berr := b.wait(t, 3*time.Minute)
			pErr, bErr := p.stderr.String(), b.stderr.String()
			pWon := strings.Contains(pErr, "WON the test-and-set")
			bWon := strings.Contains(bErr, "WON the test-and-set")
			t.Logf("cut at %v: primary won %v (%v), backup won %v (%v)", delay, pWon, perr, bWon, berr)
			if pWon == bWon {
				t.Fatalf("exactly one side must go live: primary %v, backup %v\nprimary:\n%s\nbackup:\n%s", pWon, bWon, fttest.Tail(pErr, 15), fttest.Tail(bErr, 15))
			}
			if pWon {
				if perr != nil || berr == nil || !strings.Contains(bErr, "LOST the test-and-set") {
					t.Fatalf("primary won: it must finish (%v) and the backup halt (%v)\n%s", perr, berr, fttest.Tail(bErr, 10))
				}
				if p.stdout.String() != ref || b.stdout.String() != "" {
					t.Fatalf("primary won: its output must be complete (%d of %d bytes) and the backup's empty (%d bytes)", len(p.stdout.String()), len(ref), len(b.stdout.String()))
				}
			} else {
				if berr != nil || perr == nil || !strings.Contains(pErr, "LOST the test-and-set") {
					t.Fatalf("backup won: it must finish (%v) and the primary halt (%v)\n%s", berr, perr, fttest.Tail(pErr, 10))
				}
				checkFailoverOutput(t, ref, p.stdout.String(), b.stdout.String())
			}
		})
	}
}

// TestFTLostStorage removes the shared storage, then fails a side: the
// survivor cannot run the test-and-set and so must not go live (the
// primary halts without releasing unacknowledged output). Nobody goes live
// twice; nothing released is wrong.
func TestFTLostStorage(t *testing.T) {
	e := setupFT(t)
	ref := ftguest.Expected(e.ChatS)
	t.Run("primary_killed", func(t *testing.T) {
		addr, dir := freeAddr(t), t.TempDir()
		p, b := startPair(t, e.Bin, addr, addr, dir, "--image", e.Chat)
		p.waitLog(t, "booting the guest PROTECTED", 2*time.Minute)
		time.Sleep(800 * time.Millisecond)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		p.kill9()
		berr := b.wait(t, 3*time.Minute)
		bErr := b.stderr.String()
		if berr == nil || strings.Contains(bErr, "WON") || !strings.Contains(bErr, "NOT going live") {
			t.Fatalf("the backup must not go live without the storage (exit %v)\n%s", berr, fttest.Tail(bErr, 10))
		}
		if b.stdout.String() != "" || !strings.HasPrefix(ref, p.stdout.String()) {
			t.Fatalf("wrong output: backup %d bytes (want 0), primary not a prefix", len(b.stdout.String()))
		}
	})
	t.Run("partition", func(t *testing.T) {
		addr, dir := freeAddr(t), t.TempDir()
		px := startProxy(t, addr)
		p, b := startPair(t, e.Bin, addr, px.l.Addr().String(), dir, "--image", e.Chat)
		p.waitLog(t, "booting the guest PROTECTED", 2*time.Minute)
		time.Sleep(800 * time.Millisecond)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		px.cut.Store(true)
		perr := p.wait(t, 3*time.Minute)
		berr := b.wait(t, 3*time.Minute)
		pErr, bErr := p.stderr.String(), b.stderr.String()
		if perr == nil || berr == nil || strings.Contains(pErr, "WON") || strings.Contains(bErr, "WON") {
			t.Fatalf("neither side may go live without the storage: primary %v, backup %v\nprimary:\n%s\nbackup:\n%s", perr, berr, fttest.Tail(pErr, 10), fttest.Tail(bErr, 10))
		}
		if !strings.Contains(pErr, "HALTING without releasing") {
			t.Fatalf("the primary must halt without releasing held output:\n%s", fttest.Tail(pErr, 10))
		}
		if b.stdout.String() != "" || !strings.HasPrefix(ref, p.stdout.String()) || p.stdout.String() == ref {
			t.Fatalf("wrong output: backup %d bytes (want 0), primary %d bytes (want a strict prefix of %d)", len(b.stdout.String()), len(p.stdout.String()), len(ref))
		}
	})
}

// TestFTConfigMismatch starts backups for other VMs: each is refused with a
// clear error, and the primary, which refused them, runs unprotected.
func TestFTConfigMismatch(t *testing.T) {
	e := setupFT(t)
	cases := []struct {
		name           string
		primary, other []string
	}{
		{"memory", []string{"--bare", "hello"}, []string{"--bare", "hello", "--mem", "64M"}},
		{"image", []string{"--bare", "hello"}, []string{"--bare", "pit_read"}},
	}
	if dir := os.Getenv("FTKVM_GUEST_DIR"); dir != "" || fileExists(filepath.Join(repoRoot(t), "guest", "out", "vmlinux")) {
		if dir == "" {
			dir = filepath.Join(repoRoot(t), "guest", "out")
		}
		cases = append(cases, struct {
			name           string
			primary, other []string
		}{"linux_cmdline", []string{"--guest-dir", dir}, []string{"--guest-dir", dir, "--cmdline", "console=ttyS0 quiet"}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, dir := freeAddr(t), t.TempDir()
			common := []string{"--tls-dir", makeCerts(t, e.Bin), "--split-dir", dir, "--status-every", "1s"}
			p := startSide(t, e.Bin, "primary", append(append([]string{"--listen", addr, "--wait-backup", "4s"}, common...), c.primary...)...)
			b := startSide(t, e.Bin, "backup", append(append([]string{"--connect", addr}, common...), c.other...)...)
			berr := b.wait(t, 2*time.Minute)
			bErr := b.stderr.String()
			if berr == nil || !strings.Contains(bErr, "backup's VM configuration (kernel/initrd/cmdline/CPUID/memory) differs from the primary's") {
				t.Fatalf("the backup was not refused clearly (exit %v):\n%s", berr, fttest.Tail(bErr, 10))
			}
			t.Logf("backup: %s", fttest.Line(bErr, "differs"))
			if c.name == "linux_cmdline" {
				p.kill9() // no need to boot Linux unprotected
				if !strings.Contains(p.stderr.String(), "REFUSED the backup") {
					t.Fatalf("the primary did not report refusing the backup:\n%s", p.stderr.String())
				}
				return
			}
			if err := p.wait(t, 2*time.Minute); !okExit(err) {
				t.Fatalf("primary: %v\n%s", err, p.stderr.String())
			}
			pErr := p.stderr.String()
			if !strings.Contains(pErr, "REFUSED the backup") || !strings.Contains(pErr, "running UNPROTECTED") {
				t.Fatalf("the primary did not refuse the backup and run unprotected:\n%s", pErr)
			}
		})
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// okExit accepts a side's exit: success, or ftvm's exit status 10 for the
// bare guest's own non-zero status (hello exits 42; ftvm's stderr says so).
func okExit(err error) bool { return err == nil || strings.Contains(err.Error(), "exit status 10") }

// TestFTAuth: the pair authenticates by default. A side without
// certificates refuses to start and says how to make them; a backup that
// knows the VM configuration (same guest flags) but holds certificates
// from another pair's CA, or runs in plaintext, is refused in the TLS
// handshake, and the primary runs on unprotected; an --insecure pair still
// works, and each side warns what it gives up.
func TestFTAuth(t *testing.T) {
	e := setupFT(t)
	guest := []string{"--bare", "hello"}
	t.Run("no_certificates", func(t *testing.T) {
		empty := t.TempDir()
		for _, args := range [][]string{{"primary", "--listen", freeAddr(t)}, {"backup", "--connect", freeAddr(t)}} {
			s := startSide(t, e.Bin, args[0], append(append(args[1:], "--tls-dir", empty, "--split-dir", t.TempDir()), guest...)...)
			err := s.wait(t, time.Minute)
			out := s.stderr.String()
			if err == nil || !strings.Contains(out, "ftvm certs "+empty) || !strings.Contains(out, "--insecure") || strings.Contains(out, "listening") {
				t.Fatalf("%s without certificates: exit %v\n%s", args[0], err, out)
			}
			t.Logf("%s: %s", args[0], strings.TrimSpace(out))
		}
	})
	for _, c := range []struct {
		name   string
		backup func(t *testing.T) []string
		want   string
	}{
		{"foreign_backup", func(t *testing.T) []string { return []string{"--tls-dir", makeCerts(t, e.Bin)} }, "TLS with the primary"},
		{"plaintext_backup", func(t *testing.T) []string { return []string{"--insecure"} }, "WARNING: --insecure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, dir := freeAddr(t), t.TempDir()
			common := append([]string{"--split-dir", dir, "--status-every", "1s"}, guest...)
			p := startSide(t, e.Bin, "primary", append([]string{"--listen", addr, "--wait-backup", "4s", "--tls-dir", makeCerts(t, e.Bin)}, common...)...)
			b := startSide(t, e.Bin, "backup", append(append([]string{"--connect", addr}, c.backup(t)...), common...)...)
			berr := b.wait(t, 2*time.Minute)
			bErr := b.stderr.String()
			if berr == nil || strings.Contains(bErr, "connected to the primary") || !strings.Contains(bErr, c.want) {
				t.Fatalf("the backup was not refused (exit %v):\n%s", berr, fttest.Tail(bErr, 10))
			}
			perr := p.wait(t, 2*time.Minute)
			pErr := p.stderr.String()
			if !okExit(perr) || !strings.Contains(pErr, "REFUSED a connection from") || strings.Contains(pErr, "backup connected from") || !strings.Contains(pErr, "running UNPROTECTED") {
				t.Fatalf("the primary did not refuse the backup and run unprotected (exit %v):\n%s", perr, pErr)
			}
			t.Logf("backup: %s\nprimary: %s", fttest.Line(bErr, "ftvm: "), fttest.Line(pErr, "REFUSED"))
		})
	}
	// An unauthenticated pair, by choice: it works, and both sides say
	// what that gives up.
	t.Run("insecure_pair", func(t *testing.T) {
		addr, dir := freeAddr(t), t.TempDir()
		common := append([]string{"--insecure", "--split-dir", dir, "--status-every", "1s"}, guest...)
		b := startSide(t, e.Bin, "backup", append([]string{"--connect", addr}, common...)...)
		p := startSide(t, e.Bin, "primary", append([]string{"--listen", addr, "--wait-backup", "30s"}, common...)...)
		perr, berr := p.wait(t, 2*time.Minute), b.wait(t, 2*time.Minute)
		pErr, bErr := p.stderr.String(), b.stderr.String()
		if !okExit(perr) || !okExit(berr) || !strings.Contains(pErr, "booting the guest PROTECTED") || !strings.Contains(pErr, "UNAUTHENTICATED") {
			t.Fatalf("insecure pair: primary %v, backup %v\nprimary:\n%s\nbackup:\n%s", perr, berr, fttest.Tail(pErr, 10), fttest.Tail(bErr, 10))
		}
		for _, out := range []string{pErr, bErr} {
			if !strings.Contains(out, "WARNING: --insecure: the log channel is plaintext and unauthenticated: anyone who") {
				t.Fatalf("no warning:\n%s", out)
			}
		}
		t.Logf("%s\n%s", fttest.Line(pErr, "WARNING"), fttest.Line(bErr, "WARNING"))
	})
}

// TestFTKillPrimaryLinux kills the primary at random points of the Linux
// guest's boot and workload (FTKVM_E2E_LINUX_FT_POINTS of them, default
// 2; 0 skips). The Linux replay runs several times slower than the guest, so
// the pair runs with --window-entries 1500: the primary is held to the
// backup's pace and a failover replays at most that many entries.
func TestFTKillPrimaryLinux(t *testing.T) {
	points := fttest.Points(t, "FTKVM_E2E_LINUX_FT_POINTS", 1, 2)
	dir := guestDir(t)
	e := setupFT(t)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	markers := []string{"FTKVM-GUEST: init started", "FTKVM-GUEST: step 10/10", "FTKVM-GUEST: workload done", "FTKVM-GUEST: powering off"}
	for i := 0; i < points; i++ {
		delay := time.Duration(3000+rng.Intn(40000)) * time.Millisecond
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			killJunctionCase(t, e, delay, 5*time.Minute, markers, "--guest-dir", dir, "--window-entries", "1500")
		})
	}
}

// killJunctionCase is killPrimaryCase for guests whose output differs
// from run to run (it depends on the logged time or TSC values): instead
// of a reference it checks the junction. If the backup went live it must
// re-send from an offset within what the primary released, the overlap
// must match, and the outside must see every marker; if the primary
// finished before the kill, its output must have every marker.
func killJunctionCase(t *testing.T, e ftEnv, delay, limit time.Duration, markers []string, guest ...string) {
	t.Helper()
	addr := freeAddr(t)
	p, b := startPair(t, e.Bin, addr, addr, t.TempDir(), guest...)
	p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
	select {
	case <-time.After(delay):
	case <-p.done:
	}
	killed := p.kill9()
	if err := b.wait(t, limit); err != nil {
		if strings.Contains(b.stderr.String(), "replay diverged") {
			t.Fatalf("the backup's replay diverged from the primary's log (a replay bug, not a failover one), so it could not take over: %v\n%s", err, fttest.Tail(b.stderr.String(), 6))
		}
		t.Fatalf("backup failed: %v\n%s", err, fttest.Tail(b.stderr.String(), 20))
	}
	pOut, bOut, bErr := p.stdout.String(), b.stdout.String(), b.stderr.String()
	out, from, live, err := fttest.Junction(pOut, bOut, bErr)
	if err != nil {
		t.Fatalf("killed at %v: %v", delay, err)
	}
	if live {
		t.Logf("killed at %v: primary released %d bytes, backup re-sent from %d and wrote %d; %s", delay, len(pOut), from, len(bOut), fttest.Line(bErr, "LIVE at"))
	} else if killed && !strings.Contains(bErr, "finished as backup") {
		t.Fatalf("killed at %v: the backup neither went live nor saw the run end:\n%s", delay, fttest.Tail(bErr, 10))
	} else {
		t.Logf("killed at %v, after the primary's run had ended", delay)
	}
	for _, want := range markers {
		if strings.Count(out, want) != 1 {
			t.Fatalf("killed at %v: the outside saw %q %d times, want once\n%s", delay, want, strings.Count(out, want), fttest.Tail(out, 10))
		}
	}
}
