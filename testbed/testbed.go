package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults for Options.
const (
	DefaultMemMB        = 4096
	DefaultTimeout      = 30 * time.Minute
	DefaultStallTimeout = 2 * time.Minute
)

// heartbeatEvery is how often the host's init touches the heartbeat file
// (init.sh knows it too).
const heartbeatEvery = 5 * time.Second

// Options describe one emulated host and the script it runs.
type Options struct {
	// Script is run by bash inside the host, in a chroot view of this
	// machine's filesystem (see the package doc).
	Script string
	// MemMB is the host's RAM; the tmpfs overlay that holds every write
	// outside Dir lives in it. Default DefaultMemMB.
	MemMB int
	// Timeout bounds the whole run, boot included, in wall-clock time;
	// QEMU is killed when it passes. Default DefaultTimeout.
	Timeout time.Duration
	// Env is added to the script's environment (PATH, HOME=/root and
	// TERM=dumb are set; Env may override them). Nothing else passes
	// through from this process.
	Env map[string]string
	// ExtraQEMUArgs are appended to QEMU's command line.
	ExtraQEMUArgs []string
	// Console receives the script's stdout and stderr (merged), line by
	// line as they arrive. Nil: discarded (Result.Output still has it).
	Console io.Writer
	// Dir, if set, is a directory of this machine shared read-write at the
	// same absolute path inside, and the script's working directory
	// (otherwise "/").
	Dir string
	// Link, if set, joins this host to one other by a private Ethernet
	// link (eth0 inside).
	Link *Link
	// Hostname inside; default "ftkvm-testbed".
	Hostname string
	// StallTimeout: the host is declared frozen, and killed, when its
	// heartbeat (a file its init rewrites every 5 s, whatever the script
	// does) has not changed for this long. An emulated host can freeze
	// with its vCPU halted for good, and then no timeout inside it, not
	// even go test's, ever fires. Default DefaultStallTimeout; negative:
	// no check.
	StallTimeout time.Duration
}

// Link is one end of a private Ethernet link between two emulated hosts: a
// QEMU socket netdev over 127.0.0.1:Port and a virtio-net card, eth0
// inside, carrying IPv6 link-local traffic only (no routes off the link).
// Start the listening end first; Start returns once its socket listens.
type Link struct {
	Port   int    // TCP port on 127.0.0.1 that carries the link's frames
	Listen bool   // this end listens; the other connects
	Addr   string // this end's IPv6 link-local address inside, e.g. "fe80::a" (a /64; DAD off)
}

// Result is what a finished script left.
type Result struct {
	ExitStatus int           // the script's exit status
	Output     string        // the script's stdout and stderr, as sent to Options.Console
	Boot       time.Duration // from starting QEMU to the script's start
	Elapsed    time.Duration // from starting QEMU to its exit
}

// Errors a run can end with, besides setup failures; match with errors.Is.
var (
	ErrTimeout = errors.New("testbed: the emulated host timed out")
	ErrKilled  = errors.New("testbed: the emulated host was killed")
	ErrStalled = errors.New("testbed: the emulated host froze")
)

// Host is an emulated host running in the background.
type Host struct {
	opts    Options
	cmd     *exec.Cmd
	ctl     string
	con     *console
	stderr  *limitedBuffer
	began   time.Time
	started chan struct{}
	done    chan struct{}

	mu       sync.Mutex
	bootTime time.Duration
	reason   error // why the host was stopped from outside, if it was

	res Result
	err error
}

// Run starts a host, runs o.Script in it and waits for the end: Start then
// Wait. The error is non-nil when the host could not run the script to
// its end (setup missing, no /dev/kvm inside, timeout, crash, ctx
// cancelled); the script's own failure is only Result.ExitStatus.
func Run(ctx context.Context, o Options) (Result, error) {
	h, err := Start(ctx, o)
	if err != nil {
		return Result{}, err
	}
	return h.Wait()
}

// Start boots a host in the background and returns once QEMU runs (for a
// listening Link end, once its socket listens). The host stops when the
// script ends, when Kill is called, at the timeout, or when ctx is done.
func Start(ctx context.Context, o Options) (*Host, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	img, _, err := ensureImage()
	if err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath(qemuBinary)
	if err != nil {
		return nil, err
	}
	ctl, err := os.MkdirTemp("", "ftkvm-testbed-")
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	nonce := newNonce()
	if err := writeControl(ctl, o, nonce); err != nil {
		os.RemoveAll(ctl)
		return nil, err
	}

	h := &Host{
		opts:    o,
		ctl:     ctl,
		stderr:  &limitedBuffer{max: 64 << 10},
		started: make(chan struct{}),
		done:    make(chan struct{}),
	}
	h.con = newConsole(nonce, o.Console, func() {
		h.mu.Lock()
		h.bootTime = time.Since(h.began)
		h.mu.Unlock()
		close(h.started)
	})
	h.cmd = exec.Command(qemu, qemuArgs(qemuConfig{
		Kernel: img.kernel, Initrd: img.initrd, Ctl: ctl, Dir: o.Dir,
		MemMB: o.MemMB, Link: o.Link, Extra: o.ExtraQEMUArgs,
	})...)
	// Own process group, so a kill takes anything QEMU started; and QEMU
	// dies with this process, never outliving a crashed test.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	h.cmd.Stderr = h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(ctl)
		return nil, fmt.Errorf("testbed: %w", err)
	}
	h.began = time.Now()
	if err := h.cmd.Start(); err != nil {
		os.RemoveAll(ctl)
		return nil, fmt.Errorf("testbed: starting QEMU: %w", err)
	}

	var sink io.Writer = h.con
	var raw *os.File
	// A debugging aid: the raw serial console, firmware and kernel included.
	if p := os.Getenv("FTKVM_TESTBED_RAW"); p != "" {
		if raw, err = os.Create(p); err == nil {
			sink = io.MultiWriter(h.con, raw)
		}
	}
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(sink, stdout)
		if raw != nil {
			raw.Close()
		}
		h.con.flush()
		close(copied)
	}()
	go h.watch(ctx, copied)

	if o.Link != nil && o.Link.Listen {
		if err := h.waitListening(o.Link.Port, 10*time.Second); err != nil {
			h.stop(err)
			<-h.done
			return nil, err
		}
	}
	return h, nil
}

// watch enforces the timeout and ctx, then collects the result.
func (h *Host) watch(ctx context.Context, copied <-chan struct{}) {
	exited := make(chan error, 1)
	go func() {
		<-copied // all output read before Wait closes the pipe
		exited <- h.cmd.Wait()
	}()
	timer := time.NewTimer(h.opts.Timeout)
	defer timer.Stop()
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-timer.C:
			h.stop(fmt.Errorf("%w: no end after %v (QEMU killed)", ErrTimeout, h.opts.Timeout))
			waitErr = <-exited
			break wait
		case <-ctx.Done():
			h.stop(fmt.Errorf("testbed: %w (QEMU killed)", ctx.Err()))
			waitErr = <-exited
			break wait
		case <-tick.C:
			if quiet := h.sinceHeartbeat(); h.opts.StallTimeout > 0 && quiet > h.opts.StallTimeout {
				regs := h.monitor("info registers")
				h.stop(fmt.Errorf("%w: no heartbeat for %v (its vCPU stopped: halted for good or stuck; QEMU killed); the vCPU's registers then:\n%s",
					ErrStalled, quiet.Round(time.Second), indent(registerSummary(regs))))
				waitErr = <-exited
				break wait
			}
		}
	}
	h.res, h.err = h.collect(waitErr)
	os.RemoveAll(h.ctl)
	close(h.done)
}

// sinceHeartbeat is how long the host has given no sign of life: since the
// last heartbeat, or since QEMU started if there was none yet.
func (h *Host) sinceHeartbeat() time.Duration {
	last := h.began
	if fi, err := os.Stat(filepath.Join(h.ctl, "heartbeat")); err == nil && fi.ModTime().After(last) {
		last = fi.ModTime()
	}
	return time.Since(last)
}

// monitor runs one human-monitor command on the running QEMU and returns
// its output ("" if the monitor does not answer within a few seconds).
func (h *Host) monitor(command string) string {
	out, _ := h.monitorCmd(command)
	return out
}

// monitorCmd runs one human-monitor command and returns its output, or
// why the monitor could not be asked.
func (h *Host) monitorCmd(command string) (string, error) {
	c, err := net.DialTimeout("unix", filepath.Join(h.ctl, monitorSocket), 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("testbed: QEMU monitor: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	readPrompt := func() error {
		b := make([]byte, 4096)
		for !bytes.HasSuffix(buf.Bytes(), []byte("(qemu) ")) {
			n, err := c.Read(b)
			buf.Write(b[:n])
			if err != nil {
				return fmt.Errorf("testbed: QEMU monitor: %w", err)
			}
		}
		return nil
	}
	if err := readPrompt(); err != nil {
		return "", err
	}
	buf.Reset()
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", fmt.Errorf("testbed: QEMU monitor: %w", err)
	}
	if err := readPrompt(); err != nil {
		return "", err
	}
	out := strings.TrimSuffix(buf.String(), "(qemu) ")
	// The monitor echoes the command line, with terminal escapes.
	if i := strings.IndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return strings.ReplaceAll(out, "\r", ""), nil
}

// registerSummary keeps the lines of `info registers` that tell a halted
// vCPU from a spinning one: RIP and flags, HLT, the SVM guest-mode bit in
// EFER, the control registers.
func registerSummary(regs string) string {
	if regs == "" {
		return "(the QEMU monitor did not answer)"
	}
	var keep []string
	for _, l := range strings.Split(regs, "\n") {
		for _, p := range []string{"RIP=", "CS =", "EFER=", "CR0=", "CR2="} {
			if strings.HasPrefix(l, p) || strings.Contains(l, " "+p) {
				keep = append(keep, strings.TrimSpace(l))
				break
			}
		}
	}
	if len(keep) == 0 {
		return tail(regs, 8)
	}
	return strings.Join(keep, "\n")
}

// stop kills QEMU's process group, remembering why (the first reason wins).
func (h *Host) stop(reason error) {
	h.mu.Lock()
	if h.reason == nil {
		h.reason = reason
	}
	h.mu.Unlock()
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
}

func (h *Host) collect(waitErr error) (Result, error) {
	h.mu.Lock()
	reason, boot := h.reason, h.bootTime
	h.mu.Unlock()
	started, exited, status, errs := h.con.state()
	res := Result{Output: h.con.scriptOutput(), Boot: boot, Elapsed: time.Since(h.began)}
	switch {
	case reason != nil:
		return res, fmt.Errorf("%w; %s", reason, h.context())
	case len(errs) > 0:
		return res, fmt.Errorf("testbed: the emulated host failed before the script started:\n  %s", strings.Join(errs, "\n  "))
	case exited:
		res.ExitStatus = status
		return res, nil
	}
	// No marker: fall back on the status file init writes just before it.
	if b, err := os.ReadFile(filepath.Join(h.ctl, "status")); err == nil {
		if rc, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			res.ExitStatus = rc
			return res, nil
		}
	}
	what := "before the script started"
	if started {
		what = "before the script ended"
	}
	return res, fmt.Errorf("testbed: QEMU exited (%s) %s: killed from outside (see QEMU's stderr, if shown), or a kernel panic or power-off inside; %s", exitText(waitErr), what, h.context())
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// context is the diagnostic tail for an error message.
func (h *Host) context() string {
	var b strings.Builder
	started, _, _, _ := h.con.state()
	if started {
		b.WriteString("last lines of the script's output:\n")
	} else {
		b.WriteString("the script had not started; last lines of the boot log:\n")
	}
	b.WriteString(indent(h.con.diagnostics()))
	if s := qemuNoise.ReplaceAllString(h.stderr.String(), ""); strings.TrimSpace(s) != "" {
		b.WriteString("\nQEMU's stderr:\n" + indent(tail(s, 15)))
	}
	return b.String()
}

// qemuNoise matches QEMU's warnings about CPUID bits of the EPYC model
// that TCG cannot emulate: harmless, and printed on every start.
var qemuNoise = regexp.MustCompile(`(?m)^.*TCG doesn't support requested feature.*\n?`)

func indent(s string) string {
	if s == "" {
		return "  (none)"
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// Wait waits for the host to stop and returns the script's result; the
// error is non-nil when the host did not run the script to its end.
func (h *Host) Wait() (Result, error) {
	<-h.done
	return h.res, h.err
}

// Kill is a silent host death: SIGKILL to QEMU (and its process group).
// Its peer on a Link sees the link go quiet, with no TCP reset or FIN
// inside. Wait then returns an error matching ErrKilled.
func (h *Host) Kill() {
	h.stop(fmt.Errorf("%w (SIGKILL)", ErrKilled))
}

// SetLink cuts (up false) or restores the host's Link, as a pulled cable
// would: the card stays, frames stop in both directions, neither end sees
// a reset. It is QEMU's set_link on the link's netdev.
func (h *Host) SetLink(up bool) error {
	if h.opts.Link == nil {
		return errors.New("testbed: SetLink on a host without a Link")
	}
	state := "off"
	if up {
		state = "on"
	}
	out, err := h.monitorCmd("set_link link0 " + state)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("testbed: set_link link0 %s: %s", state, strings.TrimSpace(out))
	}
	return nil
}

// ScriptStarted is closed when the script starts (the host has booted).
func (h *Host) ScriptStarted() <-chan struct{} { return h.started }

// Done is closed when the host has stopped.
func (h *Host) Done() <-chan struct{} { return h.done }

// waitListening waits until QEMU listens on 127.0.0.1:port, so the other
// end, started next, can connect (QEMU gives up at once if it cannot).
// The socket is watched in /proc/net/tcp: a probing connection would be
// taken as the link's peer.
func (h *Host) waitListening(port int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if tcpListening(port) {
			return nil
		}
		select {
		case <-h.done:
			return h.err
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testbed: QEMU does not listen on 127.0.0.1:%d after %v; %s", port, limit, h.context())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tcpListening(port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	return procNetTCPListening(string(b), port)
}

// procNetTCPListening finds 127.0.0.1:port in state LISTEN (0A) in the
// text of /proc/net/tcp.
func procNetTCPListening(table string, port int) bool {
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}

func (o Options) withDefaults() (Options, error) {
	if o.MemMB == 0 {
		o.MemMB = DefaultMemMB
	}
	if o.MemMB < 256 {
		return o, fmt.Errorf("testbed: MemMB %d too small", o.MemMB)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.Hostname == "" {
		o.Hostname = "ftkvm-testbed"
	}
	if o.Dir != "" {
		d, err := filepath.Abs(o.Dir)
		if err != nil {
			return o, fmt.Errorf("testbed: Dir: %w", err)
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return o, fmt.Errorf("testbed: Dir %s is not a directory", o.Dir)
		}
		// The 9p share follows no symlink on the way: share the real path.
		if d, err = filepath.EvalSymlinks(d); err != nil {
			return o, fmt.Errorf("testbed: Dir: %w", err)
		}
		o.Dir = d
	}
	for k := range o.Env {
		if !envName.MatchString(k) {
			return o, fmt.Errorf("testbed: Env: bad variable name %q", k)
		}
	}
	if l := o.Link; l != nil {
		if l.Port <= 0 || l.Port > 65535 {
			return o, fmt.Errorf("testbed: Link.Port %d out of range", l.Port)
		}
		ip := net.ParseIP(l.Addr)
		if ip == nil || ip.To4() != nil || !ip.IsLinkLocalUnicast() {
			return o, fmt.Errorf("testbed: Link.Addr %q is not an IPv6 link-local address (fe80::/10)", l.Addr)
		}
	}
	return o, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeControl fills the control share: config (sourced by init), run.sh
// (the environment, then the script) and script.sh.
func writeControl(ctl string, o Options, nonce string) error {
	files := map[string]string{
		"config":    controlConfig(o, nonce),
		"run.sh":    runScript(o),
		"script.sh": o.Script,
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(ctl, name), []byte(s), 0o644); err != nil {
			return fmt.Errorf("testbed: %w", err)
		}
	}
	return nil
}

func controlConfig(o Options, nonce string) string {
	var b strings.Builder
	set := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, shellQuote(v)) }
	set("TESTBED_NONCE", nonce)
	set("TESTBED_DIR", o.Dir)
	set("TESTBED_HOSTNAME", o.Hostname)
	if o.Link != nil {
		set("TESTBED_LINK_ADDR", o.Link.Addr)
	} else {
		set("TESTBED_LINK_ADDR", "")
	}
	return b.String()
}

// ControlDir is where the control share appears inside the host.
const ControlDir = "/run/ftkvm-testbed"

// monitorSocket is QEMU's human monitor, in the control directory.
const monitorSocket = "monitor.sock"

func runScript(o Options) string {
	env := map[string]string{
		"PATH": "/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": "/root",
		// stdout is the serial console, a tty: keep tools from colouring.
		"TERM": "dumb",
	}
	for k, v := range o.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by package testbed: the environment, then the script\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(env[k]))
	}
	dir := o.Dir
	if dir == "" {
		dir = "/"
	}
	fmt.Fprintf(&b, "cd %s || exit 125\n", shellQuote(dir))
	fmt.Fprintf(&b, "exec /bin/bash %s/script.sh\n", ControlDir)
	return b.String()
}

// shellQuote quotes s for sh and bash.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellJoin quotes argv into one shell command line.
func ShellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && safeWord.MatchString(a) {
			q[i] = a
		} else {
			q[i] = shellQuote(a)
		}
	}
	return strings.Join(q, " ")
}

var safeWord = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// qemuConfig is everything qemuArgs needs, resolved.
type qemuConfig struct {
	Kernel, Initrd string
	Ctl, Dir       string
	MemMB          int
	Link           *Link
	Extra          []string
}

// KernelCmdline is the emulated host's kernel command line: the console on
// the serial port, no kernel chatter on it (quiet, loglevel=1: only
// emergencies such as a soft lockup), and on a panic an immediate reboot,
// which -no-reboot turns into QEMU's exit.
// mitigations=off and tsc=reliable shorten the boot (about a tenth) and
// keep the clock from falling back to the HPET when TCG stalls: this host
// exists for tests, and nothing untrusted runs in it.
// nohz=off highres=off lapic=notscdeadline give the host a periodic LAPIC
// tick instead of one-shot TSC-deadline timers: with those, the host froze
// (its vCPU halted with interrupts on, never woken: a timer interrupt lost
// by TCG) in 2 of 3 runs of the VMM tests' hostile guest, which exits tens
// of thousands of times a second; with the periodic tick a lost interrupt
// is only a late one (5 of 5 runs of the VMM tests passed, and faster).
const KernelCmdline = "console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off tsc=reliable nohz=off highres=off lapic=notscdeadline"

func qemuArgs(c qemuConfig) []string {
	a := []string{
		"-machine", "q35", "-accel", "tcg",
		// SVM with nested paging: kvm_amd binds (TCG cannot emulate VMX).
		"-cpu", "EPYC,+svm,+npt",
		// One vCPU: with two, a host once soft-locked in KVM_RUN.
		"-smp", "1",
		"-m", strconv.Itoa(c.MemMB),
		// No default devices (NIC, VGA, monitor): the serial port on
		// stdio is the only output, and no NIC ROM slows the boot.
		"-nographic", "-nodefaults", "-no-reboot",
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
		"-kernel", c.Kernel, "-initrd", c.Initrd,
		"-append", KernelCmdline,
		// multidevs=remap: this machine's / spans several filesystems whose
		// inode numbers would collide in one 9p export (overlayfs then
		// confuses directories, e.g. mounts sysfs over /proc).
		"-virtfs", virtfs("host", "/", true),
		"-virtfs", virtfs("ctl", c.Ctl, false),
	}
	// A human monitor on a socket in the control directory, asked for the
	// registers when the host freezes. Unix socket paths are short.
	if sock := filepath.Join(c.Ctl, monitorSocket); len(sock) < 100 {
		a = append(a, "-monitor", "unix:"+qemuEscape(sock)+",server=on,wait=off")
	}
	if c.Dir != "" {
		a = append(a, "-virtfs", virtfs("dir", c.Dir, false))
	}
	if l := c.Link; l != nil {
		a = append(a, linkArgs(l)...)
	}
	return append(a, c.Extra...)
}

func virtfs(tag, path string, readonly bool) string {
	s := "local,path=" + qemuEscape(path) + ",mount_tag=" + tag + ",security_model=none,multidevs=remap"
	if readonly {
		s += ",readonly=on"
	}
	return s
}

// linkArgs is one end of a socket netdev. The two ends get different MAC
// addresses (QEMU would give both the same one).
func linkArgs(l *Link) []string {
	mode, mac := "connect", "52:54:00:f7:4b:02"
	if l.Listen {
		mode, mac = "listen", "52:54:00:f7:4b:01"
	}
	return []string{
		"-netdev", fmt.Sprintf("socket,id=link0,%s=127.0.0.1:%d", mode, l.Port),
		"-device", "virtio-net-pci,netdev=link0,mac=" + mac,
	}
}

// qemuEscape doubles commas, QEMU's escape inside an option value.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// limitedBuffer keeps the first max bytes written to it (QEMU's stderr:
// its first complaint is the one that matters).
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}
