// Command bench-twohost measures the FT pair across two emulated hosts
// (internal/pairhost), side by side in one run:
//
//   - failover after a silent host death: detection (how long the backup
//     heard nothing before declaring the primary lost) and go-live (from
//     that declaration to running live), for a bare guest and Linux;
//   - the output-commit delay per console write (p50, p99) against the
//     round trip between the two hosts (ping over their link);
//   - the primary's slowdown: its run time protected, with the backup on
//     the other host, against `ftvm run` of the same guest alone, and
//     alone while a second host runs the same guest beside it (the two
//     emulated hosts share this machine's cores, as the pair's do).
//
// Each repetition runs the three configurations of a guest back to back,
// so a ratio compares runs under the same machine load.
//
//	bench-twohost [-n 3] [-linux] [-heartbeat 50ms] [-ft-timeout 300ms] [-ftvm bin/ftvm]
//	bench-twohost -idle 10m [-heartbeat 50ms] [-ft-timeout 300ms]   the false-failover run
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/pairhost"
	"github.com/ftkvm/ftkvm/testbed"
)

func main() {
	n := flag.Int("n", 3, "repetitions per guest")
	linux := flag.Bool("linux", true, "also measure the example Linux guest")
	hb := flag.Duration("heartbeat", 50*time.Millisecond, "heartbeat interval (issue 11's figures: 50 ms)")
	to := flag.Duration("ft-timeout", 300*time.Millisecond, "failure-detection timeout (issue 11's figures: 300 ms; ftvm's default is 1 s)")
	ftvm := flag.String("ftvm", "bin/ftvm", "the ftvm binary")
	guestDir := flag.String("guest-dir", envOr("FTKVM_GUEST_DIR", "guest/out"), "the example Linux guest")
	idle := flag.Duration("idle", 0, "instead: run one pair this long with a guest that idles (halts under a 1 kHz timer, a line every 5 s) and report any false failover")
	quiet := flag.Bool("idle-quiet", false, "with -idle: the guest spins without a timer instead, so the channel carries little but heartbeats")
	flag.Parse()
	if *idle > 0 {
		if err := idleRun(*idle, *quiet, *hb, *to, *ftvm); err != nil {
			fmt.Fprintf(os.Stderr, "bench-twohost: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*n, *linux, *hb, *to, *ftvm, *guestDir); err != nil {
		fmt.Fprintf(os.Stderr, "bench-twohost: %v\n", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type guest struct {
	name      string
	flags     []string // the guest, for ftvm run and both sides
	pairFlags []string // further flags of both sides of the pair
}

type sample struct {
	alone, protected     time.Duration
	aloneBusy            time.Duration // alone, with a second host running the same guest beside it
	commitP50, commitP99 time.Duration
	toChannel, toAck     time.Duration // the commit delay's two parts (p50)
	rtt                  time.Duration
	detect, golive       time.Duration
	falseFailover        bool
	failoverOK           bool
}

func run(n int, linux bool, hb, to time.Duration, ftvm, guestDir string) error {
	var err error
	if ftvm, err = filepath.Abs(ftvm); err != nil {
		return err
	}
	if err := testbed.Setup(os.Stderr); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ftkvm-bench-twohost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	chat, err := ftguest.Build(work, ftguest.Spec{Lines: 1500, Spin: 1000})
	if err != nil {
		return err
	}
	guests := []guest{{"chatter (bare)", []string{"--image", chat}, nil}}
	if linux {
		gd, err := filepath.Abs(guestDir)
		if err != nil {
			return err
		}
		guests = append(guests, guest{"linux", []string{"--guest-dir", gd}, []string{"--window-entries", "1500"}})
	}
	timing := []string{"--heartbeat", hb.String(), "--ft-timeout", to.String()}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	fmt.Printf("bench-twohost: %d repetitions, heartbeat %v, timeout %v, two emulated hosts (2048 MB each)\n", n, hb, to)
	for _, g := range guests {
		var ss []sample
		for i := 0; i < n; i++ {
			s, err := measure(work, ftvm, g, timing, rng)
			if err != nil {
				return fmt.Errorf("%s, repetition %d: %w", g.name, i+1, err)
			}
			fmt.Printf("  %s #%d: alone %v, alone beside a busy host %v, protected %v (%.2fx alone, %.2fx beside), commit p50 %v p99 %v, rtt %v, detection %v, go-live %v%s\n",
				g.name, i+1, s.alone.Round(time.Millisecond), s.aloneBusy.Round(time.Millisecond), s.protected.Round(time.Millisecond), ratio(s.protected, s.alone), ratio(s.protected, s.aloneBusy),
				s.commitP50, s.commitP99, s.rtt, s.detect, s.golive, flags(s))
			ss = append(ss, s)
		}
		report(g.name, ss)
	}
	return nil
}

func flags(s sample) string {
	out := ""
	if s.falseFailover {
		out += " FALSE FAILOVER in the protected run"
	}
	if !s.failoverOK {
		out += " (failover run: the backup did not go live)"
	}
	return out
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func measure(work, ftvm string, g guest, timing []string, rng *rand.Rand) (sample, error) {
	var s sample
	ctx := context.Background()

	// Alone: ftvm run in one host.
	var err error
	if s.alone, err = alone(ctx, work, ftvm, g, 1); err != nil {
		return s, err
	}

	// Alone beside a busy host: the same, while a second emulated host
	// runs the same guest. The pair's two hosts share this machine's CPUs
	// the same way, so this is the baseline that separates FT's own cost
	// from two emulated hosts competing for two cores.
	if s.aloneBusy, err = alone(ctx, work, ftvm, g, 2); err != nil {
		return s, err
	}

	// Protected: the pair, no failure. The primary's host pings the
	// backup's over the link first, for the round trip.
	dir, err := os.MkdirTemp(work, "pair-")
	if err != nil {
		return s, err
	}
	ping := fmt.Sprintf("for i in $(seq 120); do busybox ping -6 -c 1 -W 1 %s%%eth0 >/dev/null 2>&1 && break; sleep 0.5; done; busybox ping -6 -c 20 -i 0.2 %s%%eth0", pairhost.BackupAddr, pairhost.BackupAddr)
	p, err := pairhost.Start(ctx, pairhost.Options{Bin: ftvm, Dir: dir, Guest: append(g.flags, g.pairFlags...), PExtra: timing, BExtra: timing, Limit: 20 * time.Minute, PPre: ping})
	if err != nil {
		return s, err
	}
	p.Primary.Wait(20 * time.Minute)
	p.Backup.Wait(2 * time.Minute)
	p.Close()
	pl, bl := p.Primary.Log(), p.Backup.Log()
	if s.protected, err = runTime(pl, ` in ([0-9.]+m?s); released`); err != nil {
		return s, fmt.Errorf("protected run: %v\n%s", err, fttest.Tail(pl, 8))
	}
	s.commitP50, _ = runTime(pl, `commit delay p50 ([0-9.]+[µmn]?s)`)
	s.commitP99, _ = runTime(pl, `p99 ([0-9.]+[µmn]?s) over`)
	s.toChannel, _ = runTime(pl, `write to log channel p50 ([0-9.]+[µmn]?s)`)
	s.toAck, _ = runTime(pl, `ack p50 ([0-9.]+[µmn]?s)`)
	s.falseFailover = strings.Contains(bl, "WON the test-and-set") || strings.Contains(pl, "WON the test-and-set")
	pre, _ := os.ReadFile(filepath.Join(dir, "primary.pre"))
	if m := regexp.MustCompile(`= [0-9.]+/([0-9.]+)/[0-9.]+ ms`).FindStringSubmatch(string(pre)); m != nil {
		ms, _ := strconv.ParseFloat(m[1], 64) // busybox ping's average, in ms
		s.rtt = time.Duration(ms * float64(time.Millisecond))
	}
	// Failover: kill the primary's host between 20% and 80% of the run.
	dir, err = os.MkdirTemp(work, "failover-")
	if err != nil {
		return s, err
	}
	p, err = pairhost.Start(ctx, pairhost.Options{Bin: ftvm, Dir: dir, Guest: append(g.flags, g.pairFlags...), PExtra: timing, BExtra: timing, Limit: 20 * time.Minute})
	if err != nil {
		return s, err
	}
	defer p.Close()
	if err := p.Primary.WaitLog("booting the guest PROTECTED", 5*time.Minute); err != nil {
		return s, err
	}
	time.Sleep(time.Duration(float64(s.protected) * (0.2 + 0.6*rng.Float64())))
	p.Primary.Kill()
	p.Backup.Wait(20 * time.Minute)
	bl = p.Backup.Log()
	s.failoverOK = strings.Contains(bl, "WON the test-and-set")
	s.detect, _ = runTime(bl, `nothing from the sender for ([0-9.]+m?s)`)
	s.golive, _ = runTime(bl, `LIVE at exit [0-9]+, ([0-9.]+[µm]?s) after`)
	return s, nil
}

// alone runs `ftvm run` of g in hosts emulated hosts at once (1: alone;
// 2: beside a second host running the same) and returns the first one's
// run time. The console goes to the host's tmpfs: a 9p write per console
// line would slow the vCPU.
func alone(ctx context.Context, work, ftvm string, g guest, hosts int) (time.Duration, error) {
	dirs := make([]string, hosts)
	errs := make([]error, hosts)
	res := make([]testbed.Result, hosts)
	done := make(chan int, hosts)
	for i := range dirs {
		d, err := os.MkdirTemp(work, "alone-")
		if err != nil {
			return 0, err
		}
		dirs[i] = d
		go func() {
			res[i], errs[i] = testbed.Run(ctx, testbed.Options{
				Script: fmt.Sprintf("%q run %s > /tmp/alone.out 2> alone.log", ftvm, strings.Join(quoteAll(g.flags), " ")),
				Dir:    d, Timeout: 20 * time.Minute, MemMB: 2048,
			})
			done <- i
		}()
	}
	for range dirs {
		<-done
	}
	if errs[0] != nil {
		return 0, errs[0]
	}
	log, _ := os.ReadFile(filepath.Join(dirs[0], "alone.log"))
	d, err := runTime(string(log), `after ([0-9.]+)s,`)
	if err != nil || res[0].ExitStatus > 1 {
		return 0, fmt.Errorf("alone (%d hosts): exit %d, %v\n%s", hosts, res[0].ExitStatus, err, log)
	}
	return d, nil
}

func quoteAll(a []string) []string {
	q := make([]string, len(a))
	for i, s := range a {
		q[i] = strconv.Quote(s)
	}
	return q
}

// runTime finds re's first group in s and parses it as a duration (a bare
// number is seconds).
func runTime(s, re string) (time.Duration, error) {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("no %q in the log", re)
	}
	v := m[1]
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		v += "s"
	}
	return time.ParseDuration(v)
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func report(name string, ss []sample) {
	var det, live, c50, rtt, toCh, toAck []time.Duration
	var ratios, busyRatios []float64
	falseN, failed := 0, 0
	for _, s := range ss {
		if s.failoverOK {
			det, live = append(det, s.detect), append(live, s.golive)
		} else {
			failed++
		}
		c50, rtt = append(c50, s.commitP50), append(rtt, s.rtt)
		toCh, toAck = append(toCh, s.toChannel), append(toAck, s.toAck)
		ratios = append(ratios, ratio(s.protected, s.alone))
		busyRatios = append(busyRatios, ratio(s.protected, s.aloneBusy))
		if s.falseFailover {
			falseN++
		}
	}
	slices.Sort(ratios)
	slices.Sort(busyRatios)
	fmt.Printf("%s: detection median %v max %v; go-live after detection median %v max %v; commit delay p50 median %v (guest write to log channel %v, channel to ack %v) vs link RTT median %v (%.1fx); protected/alone median %.2fx, protected/alone-beside-a-busy-host median %.2fx; %d false failovers, %d failovers without go-live\n",
		name, median(det), slices.Max(append(det, 0)), median(live), slices.Max(append(live, 0)), median(c50), median(toCh), median(toAck), median(rtt), ratio(median(c50), median(rtt)),
		ratios[len(ratios)/2], busyRatios[len(busyRatios)/2], falseN, failed)
}

// idleRun runs the pair for about d with a guest that mostly halts (the
// channel carries heartbeats and the timer's deliveries) and reports
// whether either side ever declared the other lost.
func idleRun(d time.Duration, quiet bool, hb, to time.Duration, ftvm string) error {
	var err error
	if ftvm, err = filepath.Abs(ftvm); err != nil {
		return err
	}
	if err := testbed.Setup(os.Stderr); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ftkvm-bench-idle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	every := 5 * time.Second
	spec := ftguest.Spec{Lines: int(d / every), Spin: int(every / time.Millisecond), Ticks: true, Idle: true}
	what := "the guest halts in between under a 1 kHz timer"
	if quiet {
		// About 1 G spin iterations a second in an emulated host (the
		// loop makes no exit); chatter's SPIN is a 32-bit immediate, so a
		// line every 2 s.
		every = 2 * time.Second
		spec = ftguest.Spec{Lines: int(d / every), Spin: 2_000_000_000}
		what = "the guest spins in between, with no timer: the channel carries heartbeats and a TSC read per line"
	}
	img, err := ftguest.Build(work, spec)
	if err != nil {
		return err
	}
	timing := []string{"--heartbeat", hb.String(), "--ft-timeout", to.String()}
	fmt.Printf("bench-twohost -idle: %d lines, about one every %v (%s), heartbeat %v, timeout %v\n", spec.Lines, every, what, hb, to)
	began := time.Now()
	p, err := pairhost.Start(context.Background(), pairhost.Options{Bin: ftvm, Dir: work, Guest: []string{"--image", img}, PExtra: timing, BExtra: timing, Limit: d + 10*time.Minute})
	if err != nil {
		return err
	}
	defer p.Close()
	p.Primary.Wait(d + 10*time.Minute)
	p.Backup.Wait(2 * time.Minute)
	pl, bl := p.Primary.Log(), p.Backup.Log()
	lost := strings.Count(pl, "BACKUP LOST") + strings.Count(bl, "PRIMARY LOST")
	won := strings.Contains(pl, "WON the test-and-set") || strings.Contains(bl, "WON the test-and-set")
	out := p.Primary.Out()
	fmt.Printf("bench-twohost -idle: the pair ran %v; the outside saw %d of %d lines; peer declared lost %d times; test-and-set run: %v\n",
		time.Since(began).Round(time.Second), strings.Count(out, "chatter line"), spec.Lines, lost, won)
	fmt.Println(fttest.Line(pl, "finished"))
	if lost > 0 || won || out != ftguest.Expected(spec) {
		return fmt.Errorf("FALSE FAILOVER or lost output in the idle run:\n%s\n%s", fttest.Tail(pl, 10), fttest.Tail(bl, 10))
	}
	return nil
}
