package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/internal/flushlog"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// header describes the VM a log belongs to.
func header(g *preparedGuest, vm *vmm.VM, epoch time.Time, verify bool) *logpb.Header {
	return replay.NewHeader(vm, replay.Guest{Bare: g.bare, Kernel: g.kernel, Initrd: g.initrd, RDTSCSites: g.nsites}, epoch, verify)
}

func cmdRecord(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("record", flag.ContinueOnError)
	var o guestOptions
	o.register(fs, scopeLog)
	out := fs.String("o", "", "write the event log to this `file` (required): it is FILE.partial until the recording ends whole, flushed every "+flushlog.Interval.String()+" so that a crash leaves it readable up to then")
	verify := fs.Bool("verify", false, "also log every PIO/MMIO read value, so a replay stops at the first read that differs")
	every := fs.Uint64("fingerprint-every", 0, "log a machine-state fingerprint after this many events (0: only at the end)")
	kickAfter := fs.Duration("kick-after", 2*time.Millisecond, "how long an event waits for a synchronous exit before the vCPU is kicked")
	windowCounts := fs.Bool("window-counts", false, "log a delivery at an interrupt-window exit as the first window after its exit (registers only) instead of a state-transfer landmark; a replay stops with a divergence if this host's window exits do not land where the guest opened the window (experimental: not measured on the emulated hosts yet)")
	timeout := fs.Duration("timeout", 0, "stop the guest after this long (0: no limit)")
	quiet := fs.Bool("q", false, "no progress or summary lines on stderr")
	progressPeriod := fs.Duration("progress", progressEvery, "period of the progress line on stderr (0: none)")
	if err := parseFlags(fs, args); err != nil {
		return exitUsage, err
	}
	if *out == "" {
		return exitUsage, usageError{fmt.Errorf("-o FILE is required")}
	}
	g, err := o.prepare()
	if err != nil {
		return exitError, err
	}
	defer g.close()
	if err := checkKVM(); err != nil {
		return exitNoKVM, err
	}
	lf, err := createLog(*out)
	if err != nil {
		return exitError, err
	}
	defer lf.finish()
	var prog progress
	rec, err := replay.NewRecorder(replay.RecorderConfig{Sink: countingSink{lf, &prog}, Input: os.Stdin, Verify: *verify, FingerprintEvery: *every, KickAfter: *kickAfter, WindowCounts: *windowCounts})
	if err != nil {
		return exitError, err
	}
	epoch := time.Now()
	vm, err := vmm.New(g.config(vmm.Config{Spec: vmm.Spec{Epoch: epoch}, Options: vmm.Options{Console: os.Stdout, Driver: rec}}))
	if err != nil {
		return exitError, err
	}
	defer vm.Close()
	if err := g.load(vm); err != nil {
		return exitError, err
	}
	if err := lf.start(header(g, vm, epoch, *verify)); err != nil {
		return exitError, err
	}
	info := infof(*quiet)
	info("recording %s with %d MiB (%d rdtsc sites patched) to %s; landmarks: %s", g.name, g.memory>>20, g.nsites, *out, replay.StrategyStateTransfer)
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	if *quiet {
		*progressPeriod = 0
	}
	stopProgress := prog.print(os.Stderr, "recording", *progressPeriod)
	res, runErr := vm.Run(ctx)
	stopProgress()
	size := lf.bytes()
	if err := lf.finish(); err != nil && runErr == nil {
		runErr = err
	}
	st := rec.Stats()
	info("logged %d events (%d clock, %d deliveries, %d at landmarks carrying %d pages (%d zero), %d injections, %d rdtsc, %d reads), %d bytes; capturing the landmarks took %v",
		st.Events, st.Clock, st.Delivers, st.Landmarks, st.LandmarkPages, st.ZeroPages, st.Injects, st.TSC, st.Reads, size, st.LandmarkTime.Round(time.Millisecond))
	info("deliveries: %d at synchronous exits, %d at window exits by count, %d at kicks and %d at window exits with landmarks; %.1f landmarks per second of guest run time (%v)",
		st.DeliveriesAtExits, st.DeliveriesAtWindows, st.LandmarksAtKicks, st.LandmarksAtWindows, perSecond(st.Landmarks, vm.Machine().RunTime()), vm.Machine().RunTime().Round(time.Millisecond))
	code, err := report(info, res, runErr)
	printFingerprint(vm)
	return code, err
}

// logFile is record's -o: the log is written to FILE.partial, flushed
// every flushlog.Interval, and renamed to FILE once it ends with its End
// event. A failure before the first event removes it; a crash, or a log
// cut short, leaves FILE.partial, readable up to its last flush.
type logFile struct {
	name, partial string
	f             *os.File
	l             *flushlog.Log // nil until start
	ended         bool          // the End event was appended
	done          bool
}

func createLog(name string) (*logFile, error) {
	partial := name + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &logFile{name: name, partial: partial, f: f}, nil
}

// start writes the header, which needs the loaded VM: the recorder exists
// before it, which is why logFile rather than the logio.Writer is its
// sink.
func (lf *logFile) start(h *logpb.Header) error {
	w, err := logio.NewWriter(lf.f, h)
	if err != nil {
		return fmt.Errorf("writing %s: %w", lf.partial, err)
	}
	lf.l = flushlog.New(w, flushlog.Interval)
	return nil
}

// Append implements replay.Sink.
func (lf *logFile) Append(ev *logpb.Event) error {
	if lf.l == nil {
		return fmt.Errorf("ftvm: event %d before the log's header", ev.GetSeq())
	}
	if err := lf.l.Append(ev); err != nil {
		return err
	}
	if ev.GetEnd() != nil {
		lf.ended = true
	}
	return nil
}

func (lf *logFile) bytes() int64 {
	if lf.l == nil {
		return 0
	}
	return lf.l.Bytes()
}

// finish closes the log and gives it its name, or removes it if no
// recording began; calling it again does nothing.
func (lf *logFile) finish() error {
	if lf.done {
		return nil
	}
	lf.done = true
	if lf.l == nil {
		lf.f.Close()
		os.Remove(lf.partial)
		return nil
	}
	if err := lf.l.Close(); err != nil {
		return fmt.Errorf("writing %s (what was written is kept there): %w", lf.partial, err)
	}
	if !lf.ended {
		return fmt.Errorf("the recording ended without its end event: the incomplete log is %s", lf.partial)
	}
	if err := os.Rename(lf.partial, lf.name); err != nil {
		return fmt.Errorf("the log is whole but not in place: %w", err)
	}
	return nil
}

// printFingerprint prints the machine state's fingerprint as the last line
// of output, so a recording and its replay can be compared by eye or diff.
func printFingerprint(vm *vmm.VM) {
	fp, err := vm.Fingerprint()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ftvm: fingerprint: %v\n", err)
		return
	}
	fmt.Printf("fingerprint %x\n", fp)
}

// perSecond is n per second of d (0 for no time).
func perSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
