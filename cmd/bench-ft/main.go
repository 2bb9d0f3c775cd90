// Command bench-ft measures the FT pair (ftvm primary/backup) on this
// machine with the bare "chatter" guest (package ft/ftguest):
//
//   - failover time, from the primary's death to the backup being live,
//     and how much of it is failure detection: for a process death (kill -9:
//     the kernel resets the TCP connection, so detection is immediate) and
//     for a silent death (a proxy that stops forwarding at the kill, as when
//     a host or its network dies: detection takes the --ft-timeout);
//   - the output-commit delay (guest writes a console byte → the primary
//     releases it) with a backup, against the same primary with no backup
//     and against the loopback TCP round trip;
//   - the primary's slowdown with a backup attached against running alone
//     (ftvm primary with no backup, and plain ftvm run), alternating runs.
//
// Usage: go run ./cmd/bench-ft [-runs 5] [-ftvm bin/ftvm]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/ft/pairtls"
)

var (
	runs    = flag.Int("runs", 5, "runs per figure")
	ftvmBin = flag.String("ftvm", "", "ftvm binary (default: build ./examples/ftvm)")
	timeout = flag.String("ft-timeout", "1s", "failure-detection timeout given to both sides")
	lines   = flag.Int("lines", 1500, "chatter: lines printed")
	spin    = flag.Int("spin", 1000, "chatter: busy-loop iterations per line")
	plain   = flag.Bool("insecure", false, "run the pair's log channel in plaintext (ftvm --insecure) instead of mutual TLS 1.3")

	// security is the pair's TLS flags for both sides: --tls-dir with
	// certificates made in main, or --insecure.
	security []string
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, err := os.MkdirTemp("", "bench-ft-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := *ftvmBin
	if bin == "" {
		bin = filepath.Join(dir, "ftvm")
		if out, err := exec.Command("go", "build", "-o", bin, "./examples/ftvm").CombinedOutput(); err != nil {
			log.Fatalf("building ftvm: %v\n%s", err, out)
		}
	}
	if *plain {
		security = []string{"--insecure"}
	} else {
		certs := filepath.Join(dir, "certs")
		if _, err := pairtls.Generate(certs, pairtls.Options{}); err != nil {
			log.Fatal(err)
		}
		security = []string{"--tls-dir", certs}
	}
	spec := ftguest.Spec{Lines: *lines, Spin: *spin}
	img, err := ftguest.Build(dir, spec)
	if err != nil {
		log.Fatal(err)
	}
	channel := "mutual TLS 1.3"
	if *plain {
		channel = "plaintext (--insecure)"
	}
	fmt.Printf("bench-ft: %s, chatter guest (%d lines, spin %d), --ft-timeout %s, log channel %s, %d runs each; command: go run ./cmd/bench-ft %s\n\n",
		time.Now().Format("2006-01-02 15:04"), spec.Lines, spec.Spin, *timeout, channel, *runs, strings.Join(os.Args[1:], " "))

	idleSpec := ftguest.Spec{Lines: 200, Spin: 5, Ticks: true, Idle: true}
	idleImg, err := ftguest.Build(dir, idleSpec)
	if err != nil {
		log.Fatal(err)
	}
	rtt := loopbackRTT(5000, nil)

	// Slowdown and commit delay: alternate pair / alone / plain runs, each
	// side free to use both CPUs, then each side pinned to its own CPU
	// (taskset), as two hosts would give it.
	type series struct{ pairDur, aloneDur, pairP50, pairP99, aloneP50 []time.Duration }
	var free, pinned series
	var plainDur, rttLoaded []time.Duration
	for i := 0; i < *runs; i++ {
		for _, pin := range []bool{false, true} {
			s := &free
			if pin {
				s = &pinned
			}
			var stop chan struct{}
			var loaded chan time.Duration
			if i == 0 && !pin {
				stop, loaded = make(chan struct{}), make(chan time.Duration, 1)
				go func() { loaded <- loopbackRTT(1<<30, stop) }()
			}
			d, p50, p99 := runPair(bin, dir, img, pin)
			if stop != nil {
				close(stop)
				rttLoaded = append(rttLoaded, <-loaded)
			}
			s.pairDur, s.pairP50, s.pairP99 = append(s.pairDur, d), append(s.pairP50, p50), append(s.pairP99, p99)
			d, p50, _ = runAlone(bin, dir, img, pin)
			s.aloneDur, s.aloneP50 = append(s.aloneDur, d), append(s.aloneP50, p50)
		}
		plainDur = append(plainDur, runPlain(bin, img))
	}
	// Output commit on a mostly idle guest (a line every 5 ms, halted in
	// between), so neither side's vCPU keeps a CPU busy.
	var idleP50, idleP99, idleAloneP50 []time.Duration
	for i := 0; i < *runs; i++ {
		_, p50, p99 := runPair(bin, dir, idleImg, false)
		idleP50, idleP99 = append(idleP50, p50), append(idleP99, p99)
		_, p50, _ = runAlone(bin, dir, idleImg, false)
		idleAloneP50 = append(idleAloneP50, p50)
	}

	var killRST, killSilent []failover
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < *runs; i++ {
		killRST = append(killRST, runFailover(bin, dir, img, false, time.Duration(300+rng.Intn(1500))*time.Millisecond))
		killSilent = append(killSilent, runFailover(bin, dir, img, true, time.Duration(300+rng.Intn(1500))*time.Millisecond))
	}

	fmt.Printf("| figure | median | max | notes |\n| --- | --- | --- | --- |\n")
	row := func(name string, d []time.Duration, note string) {
		fmt.Printf("| %s | %v | %v | %s |\n", name, round(median(d)), round(maxOf(d)), note)
	}
	printFailover := func(name string, f []failover) {
		var total, detect, after []time.Duration
		for _, x := range f {
			if x.err != nil {
				fmt.Printf("| %s | failed: %v | | |\n", name, x.err)
				continue
			}
			total, detect, after = append(total, x.live), append(detect, x.detect), append(after, x.live-x.detect)
		}
		if len(total) == 0 {
			return
		}
		row("failover, "+name+": death → backup live", total, fmt.Sprintf("%d/%d runs went live", len(total), len(f)))
		row("  of which detection", detect, "")
		row("  of which go-live after detection (replay backlog + test-and-set + re-send)", after, "")
	}
	printFailover("process death (kill -9, TCP reset)", killRST)
	printFailover("silent death (kill -9 behind a blackholing proxy)", killSilent)
	row("loopback TCP round trip (1-byte ping-pong), idle machine", []time.Duration{rtt}, "median of 5000")
	row("loopback TCP round trip while a pair runs", rttLoaded, "median during one pair run")
	for _, c := range []struct {
		name string
		s    series
	}{{"both CPUs shared", free}, {"one CPU per side (taskset)", pinned}} {
		s := c.s
		row("output commit delay with backup, p50 per run ("+c.name+")", s.pairP50, fmt.Sprintf("%.0f× idle RTT, %.1f× loaded RTT; p99 median %v",
			float64(median(s.pairP50))/float64(rtt), float64(median(s.pairP50))/float64(median(rttLoaded)), round(median(s.pairP99))))
		row("output delay without backup, p50 per run ("+c.name+")", s.aloneP50, "queue → release goroutine only")
		row("guest run time, primary with backup ("+c.name+")", s.pairDur, "")
		row("guest run time, primary without backup ("+c.name+")", s.aloneDur, "recorder on, log dropped")
		fmt.Printf("| slowdown with backup / without (%s) | %.2f× | | same guest, alternating runs |\n", c.name, ratio(s.pairDur, s.aloneDur))
	}
	row("output commit delay with backup, p50 per run (idle guest: a line every 5 ms)", idleP50, fmt.Sprintf("%.0f× idle RTT; p99 median %v", float64(median(idleP50))/float64(rtt), round(median(idleP99))))
	row("output delay without backup, p50 per run (idle guest)", idleAloneP50, "")
	row("guest run time, plain ftvm run", plainDur, "")
	fmt.Printf("| slowdown, pair (one CPU per side) / plain ftvm run | %.2f× | | |\n", ratio(pinned.pairDur, plainDur))
}

func ratio(a, b []time.Duration) float64 { return float64(median(a)) / float64(median(b)) }

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(100 * time.Nanosecond)
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func maxOf(d []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

// loopbackRTT ping-pongs one byte n times (or until stop is closed) and
// returns the median round trip.
func loopbackRTT(n int, stop chan struct{}) time.Duration {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	b := []byte{1}
	var d []time.Duration
	for i := 0; i < n; i++ {
		if stop != nil {
			select {
			case <-stop:
				return median(d)
			default:
			}
			time.Sleep(time.Millisecond)
		}
		t := time.Now()
		c.Write(b)
		io.ReadFull(c, b)
		d = append(d, time.Since(t))
	}
	return median(d)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var finalRE = regexp.MustCompile(`finished \S+.* in (\S+); released \d+ console bytes; output commit delay p50 (\S+) p99 (\S+) over`)

// parseFinal reads the primary's final line: run time and commit delays.
func parseFinal(stderr string) (d, p50, p99 time.Duration) {
	m := finalRE.FindStringSubmatch(stderr)
	if m == nil {
		log.Fatalf("no final line in the primary's output:\n%s", stderr)
	}
	d, _ = time.ParseDuration(m[1])
	p50, _ = time.ParseDuration(m[2])
	p99, _ = time.ParseDuration(m[3])
	return
}

func splitDir(dir string) string {
	d, err := os.MkdirTemp(dir, "split-")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

// command runs bin with args, pinned to cpu with taskset if cpu >= 0.
func command(cpu int, bin string, args ...string) *exec.Cmd {
	if cpu < 0 {
		return exec.Command(bin, args...)
	}
	return exec.Command("taskset", append([]string{"-c", fmt.Sprint(cpu), bin}, args...)...)
}

func cpus(pin bool) (primary, backup int) {
	if pin {
		return 0, 1
	}
	return -1, -1
}

func runPair(bin, dir, img string, pin bool) (time.Duration, time.Duration, time.Duration) {
	addr, sd := freeAddr(), splitDir(dir)
	pc, bc := cpus(pin)
	common := append([]string{"--split-dir", sd, "--image", img, "--ft-timeout", *timeout, "--status-every", "1h"}, security...)
	b := command(bc, bin, append([]string{"backup", "--connect", addr}, common...)...)
	var bErr strings.Builder
	b.Stderr = &bErr
	if err := b.Start(); err != nil {
		log.Fatal(err)
	}
	p := command(pc, bin, append([]string{"primary", "--listen", addr}, common...)...)
	out, err := runToFile(p)
	if err != nil {
		log.Fatalf("primary: %v\n%s", err, out)
	}
	if err := b.Wait(); err != nil {
		log.Fatalf("backup: %v\n%s", err, bErr.String())
	}
	return parseFinal(string(out))
}

func runAlone(bin, dir, img string, pin bool) (time.Duration, time.Duration, time.Duration) {
	pc, _ := cpus(pin)
	p := command(pc, bin, append([]string{"primary", "--listen", freeAddr(), "--wait-backup", "1ms", "--split-dir", splitDir(dir), "--image", img, "--status-every", "1h"}, security...)...)
	out, err := runToFile(p)
	if err != nil {
		log.Fatalf("primary alone: %v\n%s", err, out)
	}
	return parseFinal(string(out))
}

// runPlain times a plain ftvm run of the guest (no recorder, no ft).
func runPlain(bin, img string) time.Duration {
	start := time.Now()
	if out, err := runToFile(exec.Command(bin, "run", "-q", "--image", img)); err != nil {
		log.Fatalf("ftvm run: %v\n%s", err, out)
	}
	return time.Since(start)
}

// runToFile runs cmd with its stdout (the guest's console) going to a
// file, as it would to a terminal or a log, rather than to a pipe this
// process must keep draining, and returns its stderr.
func runToFile(cmd *exec.Cmd) (string, error) {
	f, err := os.CreateTemp("", "bench-ft-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = f, &stderr
	err = cmd.Run()
	return stderr.String(), err
}

type failover struct {
	detect, live time.Duration // from the kill
	err          error
}

// runFailover starts a pair, kills the primary after delay and times the
// backup's "PRIMARY LOST" and "LIVE" lines. silent puts a proxy between
// them that stops forwarding at the kill, so the backup sees no reset.
func runFailover(bin, dir, img string, silent bool, delay time.Duration) failover {
	addr, sd := freeAddr(), splitDir(dir)
	connect := addr
	var px *proxy
	if silent {
		px = startProxy(addr)
		connect = px.addr
		defer px.close()
	}
	common := append([]string{"--split-dir", sd, "--image", img, "--ft-timeout", *timeout, "--status-every", "1h"}, security...)
	b := exec.Command(bin, append([]string{"backup", "--connect", connect}, common...)...)
	be, _ := b.StderrPipe()
	b.Stdout = nil // /dev/null
	if err := b.Start(); err != nil {
		log.Fatal(err)
	}
	p := exec.Command(bin, append([]string{"primary", "--listen", addr}, common...)...)
	pe, _ := p.StderrPipe()
	p.Stdout = nil
	if err := p.Start(); err != nil {
		log.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pe)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "booting the guest PROTECTED") {
				once.Do(func() { close(started) })
			}
		}
	}()
	var killedAt atomic.Int64
	var detect, live time.Duration
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(be)
		for sc.Scan() {
			now := time.Now().UnixNano()
			lines = append(lines, sc.Text())
			k := killedAt.Load()
			if k == 0 {
				continue
			}
			if strings.Contains(sc.Text(), "PRIMARY LOST") && detect == 0 {
				detect = time.Duration(now - k)
			}
			if strings.Contains(sc.Text(), "WON the test-and-set") {
				live = time.Duration(now - k)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		p.Process.Kill()
		b.Process.Kill()
		return failover{err: fmt.Errorf("the pair did not start")}
	}
	time.Sleep(delay)
	if px != nil {
		px.cut.Store(true)
	}
	killedAt.Store(time.Now().UnixNano())
	p.Process.Signal(syscall.SIGKILL)
	p.Wait()
	<-done
	berr := b.Wait()
	if live == 0 {
		return failover{err: fmt.Errorf("the backup did not go live (%v): %s", berr, strings.Join(lines[max(0, len(lines)-3):], " / "))}
	}
	if detect == 0 || detect > live {
		detect = live
	}
	return failover{detect: detect, live: live}
}

// proxy forwards connections to target until cut, then swallows
// everything while keeping the sockets open.
type proxy struct {
	l     net.Listener
	addr  string
	cut   atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	px := &proxy{l: l, addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				var u net.Conn
				for i := 0; i < 200; i++ {
					if u, err = net.Dial("tcp", target); err == nil {
						break
					}
					time.Sleep(25 * time.Millisecond)
				}
				if u == nil {
					c.Close()
					return
				}
				px.mu.Lock()
				px.conns = append(px.conns, c, u)
				px.mu.Unlock()
				go px.pipe(u, c)
				px.pipe(c, u)
			}()
		}
	}()
	return px
}

func (px *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if !px.cut.Load() {
			dst.Write(buf[:n])
		}
	}
}

func (px *proxy) close() {
	px.l.Close()
	px.mu.Lock()
	defer px.mu.Unlock()
	for _, c := range px.conns {
		c.Close()
	}
}
