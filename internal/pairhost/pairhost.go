// Package pairhost runs an ftvm FT pair across two emulated hosts (package
// testbed): the primary in one, the backup in the other, joined by a
// private Ethernet link (IPv6 link-local; fe80::a is the primary's host),
// both mounting one directory of this machine over 9p, which stands for
// the NFS export of a real pair: it holds the split-brain claims and each
// side's console output (ROLE.out), log (ROLE.log) and exit status
// (ROLE.rc), and the pair's certificates (certs/, from `ftvm certs`: the
// pair runs mutual TLS). A write to it reaches this machine before it returns, so a
// side's .out file is what the outside world saw of it, whatever happens
// to its host afterwards.
//
// Host death is SIGKILL of that host's QEMU (Side.Host.Kill): the other
// host's TCP connection sees no reset and no FIN, only silence. A
// partition is the link cut in QEMU (Side.Host.SetLink(false)). Storage
// loss is the shared split directory renamed away on this machine.
//
// The two-host tests (e2e/twohost), the two-host demo and benchmark use
// it.
package pairhost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/testbed"
)

// The pair's addresses on its private link, and the primary's port.
const (
	PrimaryAddr = "fe80::a"
	BackupAddr  = "fe80::b"
	Port        = "7700"
)

// Options describe one pair run.
type Options struct {
	// Bin is the ftvm binary (a path on this machine; the hosts see this
	// machine's files).
	Bin string
	// Guest are the guest flags of both sides; BGuest, if set, the
	// backup's instead (a mismatched backup).
	Guest, BGuest []string
	// PExtra and BExtra are further flags of one side (they come last, so
	// they override).
	PExtra, BExtra []string
	// Dir is the shared directory (created if missing). Required.
	Dir string
	// Limit bounds each host's life. Default 5 minutes.
	Limit time.Duration
	// MemMB is each host's RAM. Default 2048.
	MemMB int
	// PPre is shell run in the primary's host before ftvm (its output
	// goes to primary.pre in the shared directory).
	PPre string
	// BPost is shell run in the backup's host after ftvm ends (its output
	// goes to backup.post): work on what the backup left, such as
	// replaying its --run-log, in a host that has KVM.
	BPost string
	// LAN, if set, puts the guest on a network this machine is on too
	// (see LAN): each host gets a second NIC on one of its taps and
	// bridges it with the guest's tap (LANTap inside), which ftvm's
	// --net tap:LANTap attaches to.
	LAN *LAN
}

// Pair is a running pair.
type Pair struct {
	Primary, Backup *Side
	// Split is the directory of the split-brain claims.
	Split string
}

// Side is one ftvm process in an emulated host of its own.
type Side struct {
	Role string // "primary" or "backup"
	Dir  string // the shared directory
	Host *testbed.Host
	done chan struct{}
	res  testbed.Result
	err  error
}

// Start boots the primary's host and the backup's and starts ftvm in each
// (the backup keeps dialing until the primary listens).
func Start(ctx context.Context, o Options) (*Pair, error) {
	if o.Bin == "" || o.Dir == "" {
		return nil, errors.New("pairhost: Options.Bin and Options.Dir are required")
	}
	if o.Limit == 0 {
		o.Limit = 5 * time.Minute
	}
	if o.MemMB == 0 {
		o.MemMB = 2048
	}
	split := filepath.Join(o.Dir, "split")
	if err := os.MkdirAll(split, 0o755); err != nil {
		return nil, err
	}
	// The pair's certificates (mutual TLS, ftvm's default), made here and
	// read by both hosts from the shared directory.
	certs := filepath.Join(o.Dir, "certs")
	if out, err := exec.CommandContext(ctx, o.Bin, "certs", certs).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ftvm certs: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	target := "[" + PrimaryAddr + "%eth0]:" + Port
	common := []string{"--split-dir", split, "--tls-dir", certs, "--status-every", "1s", "--claim-timeout", "2s"}
	bGuest := o.Guest
	if o.BGuest != nil {
		bGuest = o.BGuest
	}
	pArgs := concat([]string{"primary", "--listen", target, "--wait-backup", "90s"}, common, o.Guest, o.PExtra)
	bArgs := concat([]string{"backup", "--connect", target, "--connect-wait", "90s"}, common, bGuest, o.BExtra)
	pPre, bPre := o.PPre, ""
	var pQEMU, bQEMU []string
	if o.LAN != nil {
		pPre = strings.TrimSpace(lanScript(lanMAC(0)) + "\n" + pPre)
		bPre = lanScript(lanMAC(1))
		pQEMU, bQEMU = o.LAN.qemuArgs(0), o.LAN.qemuArgs(1)
	}
	p, err := startSide(ctx, o, "primary", pPre, "", pArgs, &testbed.Link{Port: port, Listen: true, Addr: PrimaryAddr}, pQEMU)
	if err != nil {
		return nil, err
	}
	b, err := startSide(ctx, o, "backup", bPre, o.BPost, bArgs, &testbed.Link{Port: port, Addr: BackupAddr}, bQEMU)
	if err != nil {
		p.Host.Kill()
		<-p.done
		return nil, err
	}
	return &Pair{Primary: p, Backup: b, Split: split}, nil
}

// Close kills both hosts (if still up) and waits for them.
func (p *Pair) Close() {
	for _, s := range []*Side{p.Primary, p.Backup} {
		s.Host.Kill()
		<-s.done
	}
}

func startSide(ctx context.Context, o Options, role, pre, post string, args []string, link *testbed.Link, qemu []string) (*Side, error) {
	s := &Side{Role: role, Dir: o.Dir, done: make(chan struct{})}
	script := fmt.Sprintf("%s %s > %s.out 2> %s.log; echo $? > %s.rc", shellQuote(o.Bin), shellQuote(args...), role, role, role)
	if pre != "" {
		script = fmt.Sprintf("( %s ) > %s.pre 2>&1\n%s", pre, role, script)
	}
	if post != "" {
		script = fmt.Sprintf("%s\n( %s ) > %s.post 2>&1", script, post, role)
	}
	h, err := testbed.Start(ctx, testbed.Options{
		Script: script, Dir: o.Dir, Link: link, Timeout: o.Limit, Hostname: role + "-host", MemMB: o.MemMB,
		ExtraQEMUArgs: qemu,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the %s's host: %w", role, err)
	}
	s.Host = h
	go func() { s.res, s.err = h.Wait(); close(s.done) }()
	return s, nil
}

func (s *Side) file(ext string) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, s.Role+ext))
	return string(b)
}

// Out is the console output the side released (what the outside saw).
func (s *Side) Out() string { return s.file(".out") }

// Log is the side's stderr: its progress and decisions.
func (s *Side) Log() string { return s.file(".log") }

// Post is the output of the side's Options.BPost script.
func (s *Side) Post() string { return s.file(".post") }

// Status is ftvm's exit status, or -1 if its host died first.
func (s *Side) Status() int {
	var rc int
	if _, err := fmt.Sscan(s.file(".rc"), &rc); err != nil {
		return -1
	}
	return rc
}

// Done is closed when the side's host has stopped.
func (s *Side) Done() <-chan struct{} { return s.done }

// Exited reports whether the side's host has stopped.
func (s *Side) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// HostErr is why the host stopped, if not because its script ended.
func (s *Side) HostErr() error { return s.err }

// Kill kills the side's host (a silent host death) and waits for it.
func (s *Side) Kill() {
	s.Host.Kill()
	<-s.done
}

// Wait waits up to d for the side's host to stop (the script ends with
// ftvm); past d it kills the host and says so.
func (s *Side) Wait(d time.Duration) error {
	select {
	case <-s.done:
		return nil
	case <-time.After(d):
		s.Kill()
		return fmt.Errorf("%s did not finish within %v", s.Role, d)
	}
}

// WaitLog waits up to d until the side's log contains sub.
func (s *Side) WaitLog(sub string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !strings.Contains(s.Log(), sub) {
		if s.Exited() {
			return fmt.Errorf("%s ended before logging %q (host: %v; exit %d)", s.Role, sub, s.err, s.Status())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %v", s.Role, sub, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func shellQuote(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
