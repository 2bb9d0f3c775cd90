// Command bench-replay measures what deterministic record/replay costs,
// side by side in one run, for the bare guests pit_ticks, memloop and hello
// and, when it has been built, the example Linux guest:
//
//   - plain: the guest run with vmm.New's default LiveDriver;
//   - record: the same guest run under a replay.Recorder (dirty-page
//     tracking on, events kept in a replay.MemLog);
//   - replay: that recording replayed by a replay.Replayer, and whether the
//     replay ended in the recorded machine state (vm.Fingerprint equal);
//   - the log: its size as `ftvm record` would write it (replay/logio
//     framing, header included), and that size per second of plain run.
//
// Each time is the wall-clock time of vm.Run (so it includes the driver's
// Stop: for the recorder and replayer, a fingerprint of all guest memory);
// creating the VM and loading the guest are not timed. With -n N each guest
// runs N times, the three variants interleaved (plain, record, replay,
// plain, …); the table gives medians, and the ratios are medians of the
// per-repetition ratios, which cancels most of the drift of a shared host.
//
// The Linux guest is GUEST_DIR/vmlinux with the
// uncompressed GUEST_DIR/initramfs.cpio, loaded as `ftvm run` does (rdtsc
// sites patched, 128 MiB, ftvm's default command line); GUEST_DIR is
// $FTKVM_GUEST_DIR, else guest/out under the current directory or the
// repository root. Console output is discarded (for the bare guests, the
// recording's and the replay's are compared by hash).
//
// Usage:
//
//	go run ./cmd/bench-replay [-guests pit_ticks,memloop,hello,linux] [-n 1] [-timeout 5m]
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// linuxCmdline is ftvm's DefaultCmdline (examples/ftvm/run.go).
const linuxCmdline = "console=ttyS0 reboot=k panic=-1 noapic nolapic lpj=5000 tsc=unstable mitigations=off"

const (
	bareMemory  = 16 << 20
	linuxMemory = 128 << 20
)

const defaultGuests = "pit_ticks,memloop,hello,pit_read,rdtsc_loop,uart_irq,hostile,dma,msr_tsc,rep_movs,spin_repeat,linux"

var (
	guestsFlag = flag.String("guests", defaultGuests, "comma-separated guests to measure: bare guest names ("+strings.Join(bare.Names(), ", ")+") and linux")
	reps       = flag.Int("n", 1, "runs of each variant per guest (medians reported)")
	timeout    = flag.Duration("timeout", 5*time.Minute, "limit for any one run")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-replay:", err)
		os.Exit(1)
	}
}

// guest is a guest ready to load into any number of VMs.
type guest struct {
	name   string
	linux  bool
	kernel []byte // patched vmlinux or bare image
	initrd []byte
	sites  *tscpatch.SiteTable
	nsites int
	memory uint64
	input  string // console input (uart_irq)
}

// input returns a fresh reader of g's console input, or nil.
func (g *guest) inputReader() io.Reader {
	if g.input == "" {
		return nil
	}
	return strings.NewReader(g.input)
}

func (g *guest) load(vm *vmm.VM) error {
	if g.name == "dma" {
		// Random data after a random delay; a replay never calls it.
		if _, err := vm.AddDMATest(func(req bounce.Request) ([]byte, error) {
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			b := make([]byte, req.Len)
			for i := range b {
				b[i] = byte(rand.Uint32())
			}
			return b, nil
		}); err != nil {
			return err
		}
	}
	if g.linux {
		return vm.LoadLinux(vmm.LinuxSpec{Kernel: g.kernel, Initrd: g.initrd, Cmdline: linuxCmdline})
	}
	return vm.LoadBare(g.kernel)
}

// patch replaces the guest's rdtsc/rdtscp sites with trapping OUTs, as
// ftvm does for every guest.
func (g *guest) patch(p tscpatch.Prepared, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	g.kernel, g.sites, g.nsites = p.Image, p.Table, len(p.Sites)
	return nil
}

func bareGuest(name string) (*guest, error) {
	img, err := bare.Build(name)
	if err != nil {
		return nil, err
	}
	g := &guest{name: name, kernel: img.Binary, memory: bareMemory}
	if name == "uart_irq" {
		g.input = "replay me\n"
	}
	return g, g.patch(tscpatch.PrepareFlat(g.kernel, vmm.BareLoadAddr))
}

// guestDir is $FTKVM_GUEST_DIR, else guest/out under the current directory
// if it holds the Linux guest, else guest/out under the repository root.
func guestDir() string {
	if d := os.Getenv("FTKVM_GUEST_DIR"); d != "" {
		return d
	}
	if hasLinux("guest/out") {
		return "guest/out"
	}
	wd, err := os.Getwd()
	if err != nil {
		return "guest/out"
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/ftkvm/ftkvm\n")) {
			return filepath.Join(d, "guest", "out")
		}
		if filepath.Dir(d) == d {
			return "guest/out"
		}
	}
}

func hasLinux(dir string) bool {
	for _, f := range []string{"vmlinux", "initramfs.cpio"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func linuxGuest(dir string) (*guest, error) {
	g := &guest{name: "linux", linux: true, memory: linuxMemory}
	var err error
	if g.kernel, err = vmm.ReadFileLimited(filepath.Join(dir, "vmlinux"), linuxMemory); err != nil {
		return nil, err
	}
	if g.initrd, err = vmm.ReadFileLimited(filepath.Join(dir, "initramfs.cpio"), linuxMemory); err != nil {
		return nil, err
	}
	if err := vmm.CheckKernel(g.kernel); err != nil {
		return nil, fmt.Errorf("%s/vmlinux: %w", dir, err)
	}
	return g, g.patch(tscpatch.PrepareELF(g.kernel))
}

// sample is one repetition's measurements of one guest.
type sample struct {
	plain, record, replay time.Duration
	plainEnd, recEnd      string // how the runs ended
	plainExits            uint64
	replayed              bool   // replay was run
	same                  bool   // replay's final fingerprint == recording's
	note                  string // why not same, or a console mismatch
	logBytes              int64
	rec                   replay.RecordStats
	rep                   replay.ReplayStats
}

func run() error {
	if *reps < 1 {
		return errors.New("-n must be at least 1")
	}
	fmt.Printf("command: %s\n", commandLine())
	fmt.Printf("%s, GOMAXPROCS=%d, %s\n\n", time.Now().Format(time.RFC3339), runtime.GOMAXPROCS(0), cpuModel())
	start := time.Now()

	var guests []*guest
	var notes []string
	for _, name := range strings.Split(*guestsFlag, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if name == "linux" {
			dir := guestDir()
			if abs, err := filepath.Abs(dir); err == nil {
				dir = abs
			}
			if !hasLinux(dir) {
				if *guestsFlag != defaultGuests {
					return fmt.Errorf("linux: %s has no vmlinux and initramfs.cpio (run 'make guest' or set FTKVM_GUEST_DIR)", dir)
				}
				notes = append(notes, fmt.Sprintf("linux: skipped, %s has no vmlinux and initramfs.cpio", dir))
				continue
			}
			g, err := linuxGuest(dir)
			if err != nil {
				return err
			}
			notes = append(notes, fmt.Sprintf("linux: %s, %d MiB, %d rdtsc sites patched, cmdline %q", dir, g.memory>>20, g.nsites, linuxCmdline))
			guests = append(guests, g)
			continue
		}
		g, err := bareGuest(name)
		if err != nil {
			return err
		}
		guests = append(guests, g)
	}
	if len(guests) == 0 {
		return errors.New("no guests to measure")
	}

	samples := make([][]sample, len(guests))
	for i := 0; i < *reps; i++ {
		for gi, g := range guests {
			fmt.Fprintf(os.Stderr, "bench-replay: %s, run %d of %d ...\n", g.name, i+1, *reps)
			s, err := measure(g)
			if err != nil {
				return fmt.Errorf("%s (run %d): %w", g.name, i+1, err)
			}
			samples[gi] = append(samples[gi], s)
		}
	}

	fmt.Printf("%-10s %-8s %9s %9s %7s %9s %7s %-6s %10s %10s %7s %9s %10s\n",
		"guest", "end", "plain", "record", "rec/pln", "replay", "rep/rec", "same", "log bytes", "bytes/s", "events", "landmarks", "lm pages")
	for gi, g := range guests {
		ss := samples[gi]
		plain := medianDur(ss, func(s sample) time.Duration { return s.plain })
		record := medianDur(ss, func(s sample) time.Duration { return s.record })
		recPlain := medianF(ss, func(s sample) float64 { return s.record.Seconds() / s.plain.Seconds() })
		logBytes := medianF(ss, func(s sample) float64 { return float64(s.logBytes) })
		bps := medianF(ss, func(s sample) float64 { return float64(s.logBytes) / s.plain.Seconds() })
		events := medianF(ss, func(s sample) float64 { return float64(s.rec.Events) })
		landmarks := medianF(ss, func(s sample) float64 { return float64(s.rec.Landmarks) })
		replayCol, repRec, same, steps := "-", "-", "-", "-"
		if ss[0].replayed {
			replayCol = secs(medianDur(ss, func(s sample) time.Duration { return s.replay }))
			repRec = fmt.Sprintf("%.2f", medianF(ss, func(s sample) float64 { return s.replay.Seconds() / s.record.Seconds() }))
			nsame := 0
			for _, s := range ss {
				if s.same {
					nsame++
				}
			}
			same = fmt.Sprintf("%d/%d", nsame, len(ss))
			steps = fmt.Sprintf("%.0f", medianF(ss, func(s sample) float64 { return float64(s.rep.LandmarkPages) }))
		}
		fmt.Printf("%-10s %-8s %9s %9s %7.2f %9s %7s %-6s %10.0f %10.0f %7.0f %9.0f %10s\n",
			g.name, ss[0].plainEnd, secs(plain), secs(record), recPlain, replayCol, repRec, same, logBytes, bps, events, landmarks, steps)
		for i, s := range ss {
			if s.recEnd != s.plainEnd || s.plainEnd != ss[0].plainEnd {
				notes = append(notes, fmt.Sprintf("%s run %d: plain run ended %s after %d exits, recording ended %s", g.name, i+1, s.plainEnd, s.plainExits, s.recEnd))
			}
			if s.note != "" {
				notes = append(notes, fmt.Sprintf("%s run %d: %s", g.name, i+1, s.note))
			}
		}
	}
	fmt.Println()
	fmt.Println("end: how the plain run ended (runs that ended otherwise are listed below);")
	fmt.Println("plain/record/replay: wall time of vm.Run (record and replay include a fingerprint of all guest memory at the end);")
	fmt.Println("rec/pln, rep/rec: time ratios; same: replays whose final fingerprint equals the recording's;")
	fmt.Println("log bytes: the log as 'ftvm record' writes it; bytes/s: log bytes per second of plain run; landmarks: recorded; lm pages: pages the state-transfer landmarks carried (loaded by the replay)")
	for _, n := range notes {
		fmt.Println(n)
	}
	fmt.Printf("total time %v\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// measure runs g plain, recorded and (bare guests only) replayed.
func measure(g *guest) (sample, error) {
	var s sample

	// Plain.
	cfg := vmm.Config{Spec: vmm.Spec{MemoryBytes: g.memory, TSCSites: g.sites}, Options: vmm.Options{Console: io.Discard}}
	if in := g.inputReader(); in != nil {
		cfg.ConsoleInput = in
	}
	vm, err := vmm.New(cfg)
	if err != nil {
		return s, err
	}
	if err := g.load(vm); err != nil {
		vm.Close()
		return s, err
	}
	var res vmm.Result
	s.plain, res, _, err = timedRun(vm)
	s.plainEnd, s.plainExits = end(res), res.Stats.SyncExits()
	vm.Close()
	if err != nil {
		return s, fmt.Errorf("plain run: %w", err)
	}

	// Record.
	epoch := time.Now()
	log := &replay.MemLog{}
	rcfg := replay.RecorderConfig{Sink: log}
	if in := g.inputReader(); in != nil {
		rcfg.Input = in
	}
	rec, err := replay.NewRecorder(rcfg)
	if err != nil {
		return s, err
	}
	recOut, recConsole := console(g)
	vm, err = vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: g.memory, TSCSites: g.sites, Epoch: epoch}, Options: vmm.Options{Console: recOut, Driver: rec}})
	if err != nil {
		return s, err
	}
	if err := g.load(vm); err != nil {
		vm.Close()
		return s, err
	}
	var recFP [32]byte
	s.record, res, recFP, err = timedRun(vm)
	s.recEnd = end(res)
	hdr := header(g, vm, epoch)
	vm.Close()
	if err != nil {
		return s, fmt.Errorf("recording: %w", err)
	}
	s.rec = rec.Stats()
	if s.logBytes, err = logSize(hdr, log.Events); err != nil {
		return s, err
	}

	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: &replay.MemLog{Events: log.Events}})
	if err != nil {
		return s, err
	}
	repOut, repConsole := console(g)
	vm, err = vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: g.memory, TSCSites: g.sites, Epoch: epoch}, Options: vmm.Options{Console: repOut, Driver: rp}})
	if err != nil {
		return s, err
	}
	defer vm.Close()
	if err := g.load(vm); err != nil {
		return s, err
	}
	var repFP [32]byte
	s.replay, _, repFP, err = timedRun(vm)
	s.replayed, s.rep = true, rp.Stats()
	s.same = err == nil && repFP == recFP
	switch {
	case err != nil:
		s.note = "replay failed: " + err.Error()
	case repFP != recFP:
		s.note = fmt.Sprintf("replay fingerprint %x != recorded %x", repFP[:8], recFP[:8])
	case !bytes.Equal(recConsole.Sum(nil), repConsole.Sum(nil)):
		s.note = "replay console output differs from the recording's"
	}
	return s, nil
}

// timedRun runs vm to its end and returns the wall time of Run and the
// final fingerprint (taken after the timing).
func timedRun(vm *vmm.VM) (time.Duration, vmm.Result, [32]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	t0 := time.Now()
	res, err := vm.Run(ctx)
	d := time.Since(t0)
	if err != nil {
		return d, res, [32]byte{}, err
	}
	fp, err := vm.Fingerprint()
	return d, res, fp, err
}

// end says briefly how a run ended.
func end(res vmm.Result) string {
	switch res.Reason {
	case vmm.StopExitPort:
		return fmt.Sprintf("exit %d", res.Status)
	case vmm.StopPowerOff:
		return "poweroff"
	case vmm.StopReset:
		return "reset"
	}
	return res.Reason.String()
}

// console returns where g's output goes: a hash for a bare guest, so a
// replay's output can be compared with the recording's; for Linux,
// io.Discard (h is then unused).
func console(g *guest) (w io.Writer, h hash.Hash) {
	h = sha256.New()
	if g.linux {
		return io.Discard, h
	}
	return h, h
}

// header is the logpb.Header ftvm record would write for g on vm.
func header(g *guest, vm *vmm.VM, epoch time.Time) *logpb.Header {
	return replay.NewHeader(vm, replay.Guest{Bare: !g.linux, Kernel: g.kernel, Initrd: g.initrd, RDTSCSites: g.nsites}, epoch, false)
}

// logSize encodes the events as a log file (which also checks their
// sequence) and returns its size.
func logSize(h *logpb.Header, events []*logpb.Event) (int64, error) {
	var buf bytes.Buffer
	w, err := logio.NewWriter(&buf, h)
	if err != nil {
		return 0, err
	}
	for _, ev := range events {
		if err := w.Append(ev); err != nil {
			return 0, fmt.Errorf("encoding the log: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return int64(buf.Len()), nil
}

func medianF(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Float64s(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

func medianDur(ss []sample, f func(sample) time.Duration) time.Duration {
	return time.Duration(medianF(ss, func(s sample) float64 { return float64(f(s)) }))
}

func secs(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// commandLine is how this program was started, shell-quoted; under
// `go run` the temporary binary is shown as `go run ./cmd/bench-replay`.
func commandLine() string {
	args := slices.Clone(os.Args)
	if strings.Contains(args[0], "go-build") {
		args[0] = "go run ./cmd/bench-replay"
	} else {
		args[0] = quote(args[0])
	}
	for i := 1; i < len(args); i++ {
		args[i] = quote(args[i])
	}
	cmd := strings.Join(args, " ")
	if d := os.Getenv("FTKVM_GUEST_DIR"); d != "" {
		cmd = "FTKVM_GUEST_DIR=" + quote(d) + " " + cmd
	}
	if wd, err := os.Getwd(); err == nil {
		cmd = "(in " + wd + ") " + cmd
	}
	return cmd
}

func quote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=,:+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
