// Command twohost-demo shows an FT failover between two hosts: it boots
// two emulated KVM hosts (package testbed) joined by a private link and
// sharing one directory as their NFS stand-in, runs the primary of the
// example Linux guest on one and its backup on the other, kills the
// primary's host partway (SIGKILL of its QEMU: a silent death), and
// narrates what each host does until the backup's host has finished the
// guest's workload. `make demo` runs it on machines without /dev/kvm.
//
// By default (-tcp) the guest runs a TCP echo server on a network this
// machine is on (pairhost.LAN: a bridge here, 10.0.2.1/24, and a tap per
// host, bridged inside with the guest's tap), and a client here holds one
// connection to it, sending numbered lines and checking every reply, while
// the primary's host is killed mid-exchange: the connection survives the
// failover. With -tcp=false the guest runs its console workload instead
// and the host is killed at a console line (-kill-at).
//
//	twohost-demo [-ftvm bin/ftvm] [-guest-dir guest/out] [-tcp] [-lines 10000] [-kill-line 3000] [-kill-at TEXT] [-timeout 20m]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/guestcheck"
	"github.com/ftkvm/ftkvm/internal/pairhost"
	"github.com/ftkvm/ftkvm/testbed"
)

func main() {
	ftvm := flag.String("ftvm", "bin/ftvm", "the ftvm binary")
	guestDir := flag.String("guest-dir", envOr("FTKVM_GUEST_DIR", "guest/out"), "the example guest (vmlinux, initramfs.cpio)")
	killAt := flag.String("kill-at", "FTKVM-GUEST: step 3/10", "with -tcp=false: kill the primary's host once the outside has seen this in its output")
	timeout := flag.Duration("timeout", 20*time.Minute, "give up after this long")
	flag.BoolVar(&tcp.on, "tcp", true, "run the guest's TCP echo server and hold a connection to it from this machine through the failover (needs root and /dev/net/tun: it makes a bridge "+lanPrefix+"br0 with "+hostCIDR+" here, removed at the end)")
	flag.IntVar(&tcp.lines, "lines", 10000, "with -tcp: numbered lines the client sends")
	flag.IntVar(&tcp.killLine, "kill-line", 3000, "with -tcp: kill the primary's host once this many replies have arrived")
	flag.Parse()
	if err := run(*ftvm, *guestDir, *killAt, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "twohost-demo: %v\n", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var start = time.Now()

// The TCP part: the LAN's addresses, and the flags.
const (
	lanPrefix = "ftkvm"
	hostCIDR  = "10.0.2.1/24"
	guestIP   = "10.0.2.15"
)

var tcp struct {
	on              bool
	lines, killLine int
}

func say(format string, a ...any) {
	fmt.Printf("\n=== %6.1fs  %s\n\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
}

func run(ftvm, guestDir, killAt string, timeout time.Duration) error {
	for _, p := range []*string{&ftvm, &guestDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	if _, err := os.Stat(filepath.Join(guestDir, "vmlinux")); err != nil {
		return fmt.Errorf("the example guest is not built (make guest): %w", err)
	}
	if err := testbed.Setup(os.Stderr); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ftkvm-twohost-demo-")
	if err != nil {
		return err
	}
	if os.Getenv("FTKVM_DEMO_KEEP") == "" {
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	say("two emulated KVM hosts (QEMU TCG + kvm_amd), joined by a private Ethernet link:\n"+
		"      primary-host %s runs `ftvm primary`, backup-host %s runs `ftvm backup`;\n"+
		"      both mount %s (this machine's directory, standing for NFS) for the test-and-set\n"+
		"      and write there what they release: this demo reads it as the outside world",
		pairhost.PrimaryAddr, pairhost.BackupAddr, dir)
	opts := pairhost.Options{
		Bin: ftvm, Dir: dir, Limit: timeout,
		Guest:  []string{"--guest-dir", guestDir, "--window-entries", "1500"},
		PExtra: []string{"--status-every", "3s"}, BExtra: []string{"--status-every", "3s"},
	}
	if tcp.on {
		lan, err := pairhost.NewLAN(lanPrefix, hostCIDR)
		if err != nil {
			return fmt.Errorf("%w (run as root, or with -tcp=false)", err)
		}
		defer lan.Close()
		opts.LAN = lan
		opts.Guest = append(opts.Guest, "--work", "net", "--net", "tap:"+pairhost.LANTap, "--guest-ip", guestIP)
		say("this machine joins the guest's network: bridge %s with %s here, bridged inside each host with the guest's tap;\n"+
			"      the guest (%s) runs a TCP echo server on port 7", lan.Bridge, hostCIDR, guestIP)
	}
	p, err := pairhost.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer p.Close()

	var tails sync.WaitGroup
	stop := make(chan struct{})
	for _, f := range []struct{ file, prefix string }{
		{"primary.log", "primary-host | "}, {"backup.log", "backup-host  | "},
		{"primary.out", "guest (released by primary-host) > "}, {"backup.out", "guest (released by backup-host)  > "},
	} {
		tails.Add(1)
		go func() { defer tails.Done(); follow(filepath.Join(dir, f.file), f.prefix, stop) }()
	}
	defer func() { close(stop); tails.Wait() }()

	if err := p.Primary.WaitLog("booting the guest PROTECTED", 5*time.Minute); err != nil {
		return err
	}
	say("the guest boots on primary-host, protected: every nondeterministic input goes over the link to backup-host, and console output leaves only once backup-host has acknowledged the log up to it")
	var killed time.Time
	var client chan error
	if tcp.on {
		killedAt := make(chan time.Time, 1)
		client = make(chan error, 1)
		if err := waitOut(ctx, p.Primary, "FTKVM-GUEST: net up"); err != nil {
			return err
		}
		conn, err := dial(ctx, net.JoinHostPort(guestIP, "7"))
		if err != nil {
			return err
		}
		defer conn.Close()
		say("a client on this machine connected to %s:7 and sends %d numbered lines, checking that every reply comes back once, in order, unchanged", guestIP, tcp.lines)
		var once sync.Once
		go func() {
			st, err := guestcheck.EchoCheck(ctx, conn, tcp.lines, 32, func(n int) {
				if n >= tcp.killLine {
					once.Do(func() {
						go func() {
							p.Primary.Kill()
							killedAt <- time.Now()
						}()
					})
				}
			})
			if err == nil {
				say("the client got all %d replies in %v, exactly once and in order, on ONE connection that never reset (longest wait for a reply: %v, the failover)",
					st.Lines, st.Duration.Round(time.Millisecond), st.MaxRTT.Round(time.Millisecond))
				conn.Close() // the guest's server sees the end, and the guest powers off
			}
			client <- err
		}()
		select {
		case killed = <-killedAt:
		case err := <-client:
			if err != nil {
				return fmt.Errorf("the TCP client: %w", err)
			}
			return fmt.Errorf("the exchange ended before the kill")
		}
		say("KILLED primary-host (SIGKILL of its QEMU) after %d replies: a silent host death; the client's connection waits", tcp.killLine)
	} else {
		if err := waitOut(ctx, p.Primary, killAt); err != nil {
			return err
		}
		killed = time.Now()
		p.Primary.Kill()
		say("KILLED primary-host (SIGKILL of its QEMU) once the outside had seen %q: a silent host death, no TCP reset reaches backup-host", killAt)
	}

	if err := p.Backup.WaitLog("PRIMARY LOST", 2*time.Minute); err != nil {
		return err
	}
	say("backup-host declared primary-host lost %.2fs after the kill (nothing heard for the heartbeat timeout); it replays what it had received, then claims the pair on the shared storage", time.Since(killed).Seconds())
	if err := p.Backup.WaitLog("test-and-set", 2*time.Minute); err != nil {
		return err
	}
	bl := p.Backup.Log()
	if !strings.Contains(bl, "WON the test-and-set") {
		return fmt.Errorf("the backup did not win the test-and-set:\n%s", fttest.Tail(bl, 5))
	}
	say("backup-host WON the test-and-set: it is the primary now and runs the guest live, re-sending the console output the dead host may not have released")
	if client != nil {
		if err := <-client; err != nil {
			return fmt.Errorf("the TCP client, through the failover: %w", err)
		}
	}
	if err := p.Backup.Wait(timeout); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the tails catch up
	out, bOut := p.Primary.Out(), p.Backup.Out()
	var n, from int
	if _, err := fmt.Sscanf(fttest.After(bl, "re-sending "), "%d console bytes from offset %d", &n, &from); err != nil {
		return fmt.Errorf("the backup did not say what it re-sent:\n%s", fttest.Tail(bl, 5))
	}
	if from > len(out) || !strings.HasPrefix(bOut, out[from:]) {
		return fmt.Errorf("output lost or garbled at the failover: primary-host released %d bytes, backup-host re-sent from offset %d: %q vs %q", len(out), from, out[from:], bOut[:min(len(bOut), 80)])
	}
	say("the outside saw %d bytes from primary-host; backup-host re-sent from offset %d, so %d bytes came twice and none was lost", len(out), from, len(out)-from)
	out = out[:from] + bOut
	missing := []string{}
	markers := []string{"FTKVM-GUEST: init started", "FTKVM-GUEST: workload done", "FTKVM-GUEST: powering off"}
	if tcp.on {
		markers = []string{"FTKVM-GUEST: init started", "FTKVM-GUEST: net up", "FTKVM-GUEST: echo done", "FTKVM-GUEST: powering off"}
	}
	for _, m := range markers {
		if strings.Count(out, m) != 1 {
			missing = append(missing, m)
		}
	}
	if p.Backup.Status() != 0 || len(missing) > 0 {
		return fmt.Errorf("the backup's host did not finish the guest cleanly (exit %d; missing %q)", p.Backup.Status(), missing)
	}
	say("done: backup-host finished the guest's workload; the outside saw one run of it (%d bytes), each marker once, nothing lost", len(out))
	return nil
}

// waitOut waits until the side's released output contains sub.
func waitOut(ctx context.Context, s *pairhost.Side, sub string) error {
	for !strings.Contains(s.Out(), sub) {
		if s.Exited() {
			return fmt.Errorf("the %s ended before %q appeared (exit %d)", s.Role, sub, s.Status())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// dial connects to the guest's server, retrying while it starts.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to the guest at %s: %w", addr, err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// follow prints the lines appended to file, with prefix, until stop.
func follow(file, prefix string, stop <-chan struct{}) {
	var off int
	var part string
	for {
		final := false
		select {
		case <-stop:
			final = true
		case <-time.After(100 * time.Millisecond):
		}
		if b, err := os.ReadFile(file); err == nil && len(b) > off {
			part += string(b[off:])
			off = len(b)
			lines := strings.Split(part, "\n")
			part = lines[len(lines)-1]
			for _, l := range lines[:len(lines)-1] {
				fmt.Printf("%s%s\n", prefix, l)
			}
		}
		if final {
			return
		}
	}
}
