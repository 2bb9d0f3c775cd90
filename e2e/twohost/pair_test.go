package twohost

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/testbed"
)

// The FT pair across two emulated hosts: each side runs `ftvm` in a host
// of its own (its own kernel and KVM), the two hosts are joined by a
// private Ethernet link (IPv6 link-local, fe80::a is the primary's host),
// and one directory of this machine, shared into both over 9p, stands for
// the NFS export both hosts mount: it holds the split-brain claims and
// each side's console output and log. Writes to it reach this machine
// before they return, so a side's output file is what the outside world
// saw of it, whatever happens to its host afterwards.
//
// Host death is SIGKILL of that host's QEMU (testbed.Host.Kill): the
// other host's TCP connection sees no reset and no FIN, only silence. A
// partition is the link cut in QEMU (testbed.Host.SetLink). Storage loss
// is the shared directory renamed away on this machine: every later open
// through the share fails.

const (
	primaryAddr = "fe80::a"
	backupAddr  = "fe80::b"
	ftPort      = "7700"
)

// env is what every two-host test needs: the ftvm binary and built guests.
type env struct {
	bin    string
	chat   string // chatter, plain
	ticks  string // chatter under a 1 kHz PIT
	chatS  ftguest.Spec
	ticksS ftguest.Spec
}

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
	envOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ftkvm-twohost-")
		if err != nil {
			envErr = err
			return
		}
		envV.bin = os.Getenv("FTKVM_FTVM")
		if envV.bin == "" {
			envV.bin = filepath.Join(dir, "ftvm")
			cmd := exec.Command("go", "build", "-o", envV.bin, "./examples/ftvm")
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				envErr = fmt.Errorf("building ftvm: %v\n%s", err, out)
				return
			}
		}
		envV.chatS = ftguest.Spec{Lines: 1500, Spin: 1000}
		envV.ticksS = ftguest.Spec{Lines: 400, Spin: 1000, Ticks: true}
		if envV.chat, envErr = ftguest.Build(dir, envV.chatS); envErr != nil {
			return
		}
		envV.ticks, envErr = ftguest.Build(dir, envV.ticksS)
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return envV
}

// side is one ftvm process in an emulated host of its own.
type side struct {
	role string // "primary" or "backup"
	dir  string // the shared directory
	host *testbed.Host
	done chan struct{}
	res  testbed.Result
	err  error
}

func (s *side) file(ext string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, s.role+ext))
	return string(b)
}

// out is the console output the side released (what the outside saw).
func (s *side) out() string { return s.file(".out") }

// log is the side's stderr: its progress and decisions.
func (s *side) log() string { return s.file(".log") }

// status is ftvm's exit status, or -1 if the host died first.
func (s *side) status() int {
	var rc int
	if _, err := fmt.Sscan(s.file(".rc"), &rc); err != nil {
		return -1
	}
	return rc
}

func (s *side) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// wait waits for the side's host to stop (the script ends with ftvm).
func (s *side) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(d):
		s.host.Kill()
		<-s.done
		t.Fatalf("%s did not finish within %v\n%s", s.role, d, tail(s.log(), 20))
	}
}

// waitLog waits until the side's log contains sub.
func (s *side) waitLog(t *testing.T, sub string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(s.log(), sub) {
		if s.exited() {
			t.Fatalf("%s ended before logging %q (host: %v)\n%s\n%s", s.role, sub, s.err, tail(s.log(), 20), tail(s.res.Output, 10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v\n%s", s.role, sub, d, tail(s.log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// pairOpts are the flags of one pair run.
type pairOpts struct {
	guest          []string // guest flags, both sides
	bGuest         []string // if set, the backup's guest flags instead
	pExtra, bExtra []string // flags of one side
	limit          time.Duration
}

// startPair boots the primary's host and the backup's, joined by a link,
// sharing dir, and starts ftvm in each.
func startPair(t *testing.T, e env, o pairOpts) (p, b *side) {
	t.Helper()
	if o.limit == 0 {
		o.limit = 5 * time.Minute
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "split"), 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	common := []string{"--split-dir", filepath.Join(dir, "split"), "--status-every", "1s", "--claim-timeout", "2s"}
	bGuest := o.guest
	if o.bGuest != nil {
		bGuest = o.bGuest
	}
	pArgs := append(append(append([]string{"primary", "--listen", "[" + primaryAddr + "%eth0]:" + ftPort, "--wait-backup", "90s"}, common...), o.guest...), o.pExtra...)
	bArgs := append(append(append([]string{"backup", "--connect", "[" + primaryAddr + "%eth0]:" + ftPort, "--connect-wait", "90s"}, common...), bGuest...), o.bExtra...)
	p = startSide(t, e, "primary", dir, pArgs, &testbed.Link{Port: port, Listen: true, Addr: primaryAddr}, o.limit)
	b = startSide(t, e, "backup", dir, bArgs, &testbed.Link{Port: port, Addr: backupAddr}, o.limit)
	return p, b
}

func startSide(t *testing.T, e env, role, dir string, args []string, link *testbed.Link, limit time.Duration) *side {
	t.Helper()
	s := &side{role: role, dir: dir, done: make(chan struct{})}
	script := fmt.Sprintf("%s %s > %s.out 2> %s.log; echo $? > %s.rc", shellQuote([]string{e.bin}), shellQuote(args), role, role, role)
	h, err := testbed.Start(context.Background(), testbed.Options{
		Script: script, Dir: dir, Link: link, Timeout: limit, Hostname: role + "-host", MemMB: 2048,
	})
	if err != nil {
		t.Fatalf("starting the %s's host: %v", role, err)
	}
	s.host = h
	go func() { s.res, s.err = h.Wait(); close(s.done) }()
	t.Cleanup(func() {
		h.Kill()
		<-s.done
	})
	return s
}

// checkFailoverOutput requires the outside world's view — the primary's
// released output followed by the backup's — to be the reference with at
// most an overlap (duplicated output re-sent by the backup), nothing lost
// and nothing else added.
func checkFailoverOutput(t *testing.T, ref, pOut, bOut string) {
	t.Helper()
	if !strings.HasPrefix(ref, pOut) {
		t.Fatalf("the primary released output that is not a prefix of the reference: %d bytes, tail %q", len(pOut), tail(pOut, 3))
	}
	k := len(ref) - len(bOut)
	if k < 0 || ref[k:] != bOut {
		t.Fatalf("the backup's output (%d bytes) is not a suffix of the reference (%d bytes)", len(bOut), len(ref))
	}
	if k > len(pOut) {
		t.Fatalf("output lost: the primary released %d bytes, the backup re-sent from offset %d", len(pOut), k)
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func after(s, sub string) string {
	if i := strings.Index(s, sub); i >= 0 {
		return s[i+len(sub):]
	}
	return ""
}
