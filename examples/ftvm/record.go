package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

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
	o.register(fs)
	out := fs.String("o", "", "write the event log to this file (required)")
	verify := fs.Bool("verify", false, "also log every PIO/MMIO read value, so a replay stops at the first read that differs")
	every := fs.Uint64("fingerprint-every", 0, "log a machine-state fingerprint after this many events (0: only at the end)")
	kickAfter := fs.Duration("kick-after", 2*time.Millisecond, "how long an event waits for a synchronous exit before the vCPU is kicked")
	timeout := fs.Duration("timeout", 0, "stop the guest after this long (0: no limit)")
	quiet := fs.Bool("q", false, "no progress or summary lines on stderr")
	if err := parseFlags(fs, args); err != nil {
		return 2, err
	}
	if *out == "" {
		return 2, usageError{fmt.Errorf("-o FILE is required")}
	}
	g, err := o.prepare()
	if err != nil {
		return 1, err
	}
	defer g.close()
	f, err := os.Create(*out)
	if err != nil {
		return 1, err
	}
	defer f.Close()
	sink := &lazyWriter{f: f}
	rec, err := replay.NewRecorder(replay.RecorderConfig{Sink: sink, Input: os.Stdin, Verify: *verify, FingerprintEvery: *every, KickAfter: *kickAfter})
	if err != nil {
		return 1, err
	}
	epoch := time.Now()
	vm, err := vmm.New(g.config(vmm.Config{Spec: vmm.Spec{Epoch: epoch}, Options: vmm.Options{Console: os.Stdout, Driver: rec}}))
	if err != nil {
		return 1, err
	}
	defer vm.Close()
	if err := g.load(vm); err != nil {
		return 1, err
	}
	if sink.w, err = logio.NewWriter(f, header(g, vm, epoch, *verify)); err != nil {
		return 1, err
	}
	info := infof(*quiet)
	info("recording %s with %d MiB (%d rdtsc sites patched) to %s; landmarks: %s", g.name, g.memory>>20, g.nsites, *out, replay.StrategyStateTransfer)
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	res, runErr := vm.Run(ctx)
	if err := sink.w.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("writing %s: %w", *out, err)
	}
	st := rec.Stats()
	info("logged %d events (%d clock, %d deliveries, %d at landmarks carrying %d pages (%d zero), %d injections, %d rdtsc, %d reads), %d bytes; capturing the landmarks took %v",
		st.Events, st.Clock, st.Delivers, st.Landmarks, st.LandmarkPages, st.ZeroPages, st.Injects, st.TSC, st.Reads, sink.w.Bytes(), st.LandmarkTime.Round(time.Millisecond))
	code, err := report(info, res, runErr)
	printFingerprint(vm)
	return code, err
}

// lazyWriter lets the recorder exist before the header (which needs the
// loaded VM) is written.
type lazyWriter struct {
	f *os.File
	w *logio.Writer
}

func (l *lazyWriter) Append(ev *logpb.Event) error { return l.w.Append(ev) }

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
