// Command bench-devices measures the example guest's virtio disk and
// network under FT against the same guest alone, side by side in one run
// (alternating runs, medians), on a machine with /dev/kvm (make bench runs
// it in an emulated KVM host):
//
//   - disk (ftkvm.work=diskbench, O_DIRECT on /dev/vda): sequential write
//     and read of 4 MiB in 256 KiB requests, and 512 synchronous 4 KiB
//     writes (IOPS), timed by when the guest's lines reach the console;
//   - network (ftkvm.work=net): a bulk transfer through the guest's TCP
//     echo server from a client here, over a tap: -net-mib MiB sent while
//     the same comes back, checked byte for byte;
//   - the logging bandwidth each workload needs, from a recording of it
//     (ftvm record: the log an FT primary sends): the bytes the log file
//     grew by while the workload ran (between its first and last line;
//     the boot is not counted) per second, and how much S2 (the log
//     channel's compression option) shrinks the whole log.
//
// "Alone" is `ftvm run`; "FT" is `ftvm primary` with `ftvm backup` on this
// machine's loopback (mutual TLS, shared disk image), whose output leaves
// only when the backup has acknowledged the log up to it: FT's console
// lines come one commit delay late, at the start and the end alike. It
// needs root (the tap) and the example guest.
//
// Usage: bench-devices [-ftvm bin/ftvm] [-guest-dir guest/out] [-runs 3] [-net-mib 4]
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/ftkvm/ftkvm/internal/hostnet"
)

var (
	ftvm     = flag.String("ftvm", "bin/ftvm", "the ftvm binary")
	guestDir = flag.String("guest-dir", envOr("FTKVM_GUEST_DIR", "guest/out"), "the example guest")
	runs     = flag.Int("runs", 3, "runs of each workload in each mode")
	netMiB   = flag.Int("net-mib", 4, "MiB the network client sends (and gets back)")
	keep     = flag.String("keep", "", "directory for the recorded logs (default: a temporary one)")
	ftFlags  = flag.String("ft-flags", "", "further flags for both FT sides, space-separated (e.g. \"--kick-after 10ms\")")
)

const (
	tap      = "ftkvmbench0"
	hostCIDR = "10.0.2.1/24"
	guestIP  = "10.0.2.15"
	diskSize = 16 << 20
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench-devices: ")
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// disk is one diskbench run: the three phases' durations.
type disk struct{ write, read, iops time.Duration }

func run() error {
	bin, err := filepath.Abs(*ftvm)
	if err != nil {
		return err
	}
	*ftvm = bin
	work, err := os.MkdirTemp("", "bench-devices-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logs := *keep
	if logs == "" {
		logs = work
	}
	if out, err := exec.Command(*ftvm, "certs", filepath.Join(work, "certs")).CombinedOutput(); err != nil {
		return fmt.Errorf("ftvm certs: %v: %s", err, out)
	}
	if err := makeTap(); err != nil {
		return err
	}
	defer exec.Command("ip", "link", "del", tap).Run()

	var dAlone, dFT []disk
	var nAlone, nFT []time.Duration
	for i := 0; i < *runs; i++ {
		for _, ft := range order(i) {
			d, err := runDisk(work, ft)
			if err != nil {
				return fmt.Errorf("disk run %d (%s): %w", i+1, mode(ft), err)
			}
			n, err := runNet(work, ft, "")
			if err != nil {
				return fmt.Errorf("network run %d (%s): %w", i+1, mode(ft), err)
			}
			fmt.Printf("run %d %-5s: disk write %v, read %v, 512 x 4 KiB %v; network %d MiB each way %v\n",
				i+1, mode(ft), d.write.Round(time.Millisecond), d.read.Round(time.Millisecond), d.iops.Round(time.Millisecond), *netMiB, n.Round(time.Millisecond))
			if ft {
				dFT, nFT = append(dFT, d), append(nFT, n)
			} else {
				dAlone, nAlone = append(dAlone, d), append(nAlone, n)
			}
		}
	}
	const mib = 4.0 // diskbench's transfers
	fmt.Printf("\nmedians of %d runs each, alternating (%s %s):\n", *runs, *ftvm, "run | primary+backup on loopback")
	fmt.Printf("%-34s %12s %12s %9s\n", "", "alone", "FT", "FT/alone")
	row := func(name string, a, f float64, unit string) {
		fmt.Printf("%-34s %9.2f %-2s %9.2f %-2s %9.2f\n", name, a, unit, f, unit, f/a)
	}
	row("disk sequential write (4 MiB)", mib/med(dAlone, func(d disk) time.Duration { return d.write }).Seconds(),
		mib/med(dFT, func(d disk) time.Duration { return d.write }).Seconds(), "MB")
	row("disk sequential read (4 MiB)", mib/med(dAlone, func(d disk) time.Duration { return d.read }).Seconds(),
		mib/med(dFT, func(d disk) time.Duration { return d.read }).Seconds(), "MB")
	row("disk 4 KiB sync writes (IOPS)", 512/med(dAlone, func(d disk) time.Duration { return d.iops }).Seconds(),
		512/med(dFT, func(d disk) time.Duration { return d.iops }).Seconds(), "/s")
	row(fmt.Sprintf("network echo (%d MiB each way)", *netMiB), float64(*netMiB)/median(nAlone).Seconds(),
		float64(*netMiB)/median(nFT).Seconds(), "MB")
	fmt.Println("(MB = MiB/s of guest data; the FT/alone column is the performance ratio)")

	fmt.Printf("\nlogging bandwidth (ftvm record of each workload: the log an FT primary sends)\n")
	fmt.Printf("%-12s %14s %9s %9s %12s %10s\n", "workload", "logged bytes", "seconds", "Mbit/s", "whole log", "S2 ratio")
	for _, w := range []string{"diskbench", "net"} {
		path := filepath.Join(logs, w+".log")
		win, err := record(work, w, path)
		if err != nil {
			return fmt.Errorf("recording %s: %w", w, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Printf("%-12s %14d %9.1f %9.2f %12d %10.2f\n", w, win.bytes, win.dur.Seconds(), float64(win.bytes)*8/win.dur.Seconds()/1e6, len(b), s2Ratio(b))
	}
	fmt.Println("(logged bytes: what the log file grew by while the workload ran, measured by its size at the workload's first and last line)")
	return nil
}

func order(i int) []bool {
	if i%2 == 0 {
		return []bool{false, true}
	}
	return []bool{true, false}
}

func mode(ft bool) string {
	if ft {
		return "FT"
	}
	return "alone"
}

func med(ds []disk, f func(disk) time.Duration) time.Duration {
	v := make([]time.Duration, len(ds))
	for i, d := range ds {
		v[i] = f(d)
	}
	return median(v)
}

func median(v []time.Duration) time.Duration {
	s := append([]time.Duration(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// s2Ratio is the log's size over its size compressed with S2 in 64 KiB
// blocks (the channel compresses frames of about that size).
func s2Ratio(b []byte) float64 {
	n := 0
	for rest := b; len(rest) > 0; {
		k := min(len(rest), 64<<10)
		n += len(s2.Encode(nil, rest[:k]))
		rest = rest[k:]
	}
	if n == 0 {
		return 0
	}
	return float64(len(b)) / float64(n)
}

func makeTap() error {
	_, err := hostnet.Tap(tap, hostCIDR)
	return err
}

func newImage(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(diskSize)
}

// proc is a running ftvm whose stdout lines are stamped as they arrive.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []stamped
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

type stamped struct {
	at   time.Time
	line string
}

func start(args ...string) (*proc, error) {
	p := &proc{cmd: exec.Command(*ftvm, args...), done: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, stamped{time.Now(), sc.Text()})
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// when waits for a line containing sub and returns when it arrived.
func (p *proc) when(sub string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l.line, sub) {
				p.mu.Unlock()
				return l.at, nil
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			return time.Time{}, fmt.Errorf("ftvm %s ended (%v) before %q; stderr:\n%s", p.cmd.Args[1], p.err, sub, tail(p.stderr.String(), 8))
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			return time.Time{}, fmt.Errorf("no %q within %v", sub, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (p *proc) wait(limit time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		p.kill()
		return fmt.Errorf("ftvm %s did not finish within %v", p.cmd.Args[1], limit)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// launch starts the guest alone (ftvm run) or as an FT pair and returns
// the process whose stdout is what the outside sees (the primary), and a
// function that waits for the run (both sides) to end.
func launch(work string, ft bool, guest ...string) (*proc, func() error, error) {
	guest = append([]string{"--guest-dir", *guestDir}, guest...)
	if !ft {
		p, err := start(append([]string{"run"}, guest...)...)
		if err != nil {
			return nil, nil, err
		}
		return p, func() error { return p.wait(5 * time.Minute) }, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := l.Addr().String()
	l.Close()
	split, err := os.MkdirTemp(work, "split")
	if err != nil {
		return nil, nil, err
	}
	common := append([]string{"--tls-dir", filepath.Join(work, "certs"), "--split-dir", split, "--window-entries", "1500", "--status-every", "-1s"}, guest...)
	common = append(common, strings.Fields(*ftFlags)...)
	b, err := start(append([]string{"backup", "--connect", addr}, common...)...)
	if err != nil {
		return nil, nil, err
	}
	p, err := start(append([]string{"primary", "--listen", addr, "--wait-backup", "60s"}, common...)...)
	if err != nil {
		b.kill()
		return nil, nil, err
	}
	return p, func() error {
		err := p.wait(5 * time.Minute)
		if berr := b.wait(time.Minute); err == nil && berr != nil {
			err = fmt.Errorf("backup: %w\n%s", berr, tail(b.stderr.String(), 8))
		}
		if err == nil && !strings.Contains(p.stderr.String(), "finished protected") {
			err = fmt.Errorf("the primary did not finish protected:\n%s", tail(p.stderr.String(), 8))
		}
		return err
	}, nil
}

func runDisk(work string, ft bool) (disk, error) {
	img := filepath.Join(work, "disk.img")
	if err := newImage(img); err != nil {
		return disk{}, err
	}
	p, wait, err := launch(work, ft, "--disk", img, "--work", "diskbench")
	if err != nil {
		return disk{}, err
	}
	var at [4]time.Time
	for i, m := range []string{"diskbench start", "diskbench write done", "diskbench read done", "diskbench iops done"} {
		if at[i], err = p.when("FTKVM-GUEST: "+m, 5*time.Minute); err != nil {
			p.kill()
			wait()
			return disk{}, err
		}
	}
	if err := wait(); err != nil {
		return disk{}, err
	}
	return disk{write: at[1].Sub(at[0]), read: at[2].Sub(at[1]), iops: at[3].Sub(at[2])}, nil
}

// window is a recording's growth while the workload ran.
type window struct {
	bytes int64
	dur   time.Duration
}

// recording is where `ftvm record -o path` writes while it runs: it
// renames path.partial to path once the log is whole.
func recording(path string) string { return path + ".partial" }

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// lastWindow is the logging window of the last recorded net run.
var lastWindow window

// runNet boots the net workload and pushes netMiB through the echo server
// and back; with logPath, as a recording (ftvm record -o logPath), whose
// growth during the transfer it leaves in lastWindow.
func runNet(work string, ft bool, logPath string) (time.Duration, error) {
	var p *proc
	var wait func() error
	var err error
	if logPath != "" {
		p, err = start("record", "-q", "-o", logPath, "--guest-dir", *guestDir, "--net", "tap:"+tap, "--work", "net")
		wait = func() error { return p.wait(5 * time.Minute) }
	} else {
		p, wait, err = launch(work, ft, "--net", "tap:"+tap, "--work", "net")
	}
	if err != nil {
		return 0, err
	}
	fail := func(err error) (time.Duration, error) {
		p.kill()
		wait()
		return 0, err
	}
	if _, err := p.when("FTKVM-GUEST: net up", 5*time.Minute); err != nil {
		return fail(err)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(guestIP, "7"), 30*time.Second)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	data := make([]byte, *netMiB<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	began, size0 := time.Now(), fileSize(recording(logPath))
	sent := make(chan error, 1)
	go func() { _, err := conn.Write(data); sent <- err }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fail(fmt.Errorf("reading the echo: %w", err))
	}
	took := time.Since(began)
	if logPath != "" {
		lastWindow = window{bytes: fileSize(recording(logPath)) - size0, dur: took}
	}
	if err := <-sent; err != nil {
		return fail(err)
	}
	if !bytes.Equal(got, data) {
		return fail(errors.New("the echo differs from what was sent"))
	}
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, conn)
	if err := wait(); err != nil {
		return 0, err
	}
	return took, nil
}

// record records a workload and returns the log's growth while it ran.
func record(work, w, path string) (window, error) {
	if w == "net" {
		_, err := runNet(work, false, path)
		return lastWindow, err
	}
	img := filepath.Join(work, "disk.img")
	if err := newImage(img); err != nil {
		return window{}, err
	}
	p, err := start("record", "-q", "-o", path, "--guest-dir", *guestDir, "--disk", img, "--work", w)
	if err != nil {
		return window{}, err
	}
	t0, err := p.when("FTKVM-GUEST: diskbench start", 5*time.Minute)
	s0 := fileSize(recording(path))
	if err == nil {
		var t1 time.Time
		t1, err = p.when("FTKVM-GUEST: diskbench iops done", 5*time.Minute)
		if err == nil {
			win := window{bytes: fileSize(recording(path)) - s0, dur: t1.Sub(t0)}
			if err := p.wait(5 * time.Minute); err != nil {
				return window{}, fmt.Errorf("%w\n%s", err, tail(p.stderr.String(), 8))
			}
			return win, nil
		}
	}
	p.kill()
	return window{}, err
}
