package replay

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/internal/flushlog"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// FileConfig configures RecordFile and ReplayFile. The zero value runs
// quietly: the guest's console output is discarded.
type FileConfig struct {
	// Console receives the guest's COM1 output. In a replay it is what
	// the replayed guest writes, which the replayer checks against the
	// recording's as it goes.
	Console io.Writer
	// Input is a recording's console input (it goes into the log).
	Input io.Reader
	// Verify and FingerprintEvery are a recording's RecorderConfig
	// fields: log every device read value, log a fingerprint every so
	// many events.
	Verify           bool
	FingerprintEvery uint64
	// Options are diagnostics (vmm.Options' ExitTrace, Warn). The
	// console, console input, driver and clock are RecordFile's and
	// ReplayFile's: setting them here is an error.
	Options vmm.Options
}

func (c FileConfig) vmConfig(spec vmm.Spec, console io.Writer, d vmm.Driver) (vmm.Config, error) {
	o := c.Options
	if o.Console != nil || o.ConsoleInput != nil || o.Driver != nil || o.Clock != nil {
		return vmm.Config{}, fmt.Errorf("%w: FileConfig.Options sets the console, console input, driver or clock, which RecordFile and ReplayFile supply", vmm.ErrInvalidConfig)
	}
	o.Console, o.Driver = console, d
	return vmm.Config{Spec: spec, Options: o}, nil
}

// loadedVM builds the VM g runs on, driven by d, with g loaded.
func (c FileConfig) loadedVM(g *PreparedGuest, epoch time.Time, console io.Writer, d vmm.Driver) (*vmm.VM, error) {
	vc, err := c.vmConfig(g.Spec(epoch), console, d)
	if err != nil {
		return nil, err
	}
	vm, err := newVM(vc)
	if err != nil {
		return nil, err
	}
	if err := g.Load(vm); err != nil {
		vm.Close()
		return nil, err
	}
	return vm, nil
}

// newVM builds RecordFile's and ReplayFile's VM. Tests swap it for one
// that runs the real vmm loop over vmmtest's fake vCPU, without KVM.
var newVM = vmm.New

// RecordFile runs g on a new VM, recording it to the log file path, and
// returns how the guest stopped. The log is written to path+".partial",
// flushed every flushlog.Interval (a crash leaves it readable up to its
// last flush), and renamed to path once it ends with its End event. A
// run that fails before the first event leaves no file; one cut short
// leaves path+".partial" and says so.
func RecordFile(ctx context.Context, path string, g *PreparedGuest, cfg FileConfig) (vmm.Result, error) {
	partial := path + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return vmm.Result{}, err
	}
	// The recorder is the VM's driver, so it exists before the VM; the
	// header needs the loaded VM. The sink gets its writer in between.
	sink := &fileSink{}
	started := false
	defer func() {
		if !started {
			f.Close()
			os.Remove(partial)
		}
	}()
	var input interface{ Read([]byte) (int, error) }
	if cfg.Input != nil {
		input = cfg.Input
	}
	rec, err := NewRecorder(RecorderConfig{Sink: sink, Input: input, Verify: cfg.Verify, FingerprintEvery: cfg.FingerprintEvery})
	if err != nil {
		return vmm.Result{}, err
	}
	epoch := time.Now()
	// The console's output is logged too (Output events), so that a
	// replay checks what the guest printed, not only where it ended.
	cons := &recordedConsole{rec: rec, out: cfg.Console}
	if cons.out == nil {
		cons.out = io.Discard
	}
	vm, err := cfg.loadedVM(g, epoch, cons, rec)
	if err != nil {
		return vmm.Result{}, err
	}
	defer vm.Close()
	w, err := logio.NewWriter(f, g.Header(vm, epoch, cfg.Verify))
	if err != nil {
		return vmm.Result{}, fmt.Errorf("writing %s: %w", partial, err)
	}
	started = true
	sink.l = flushlog.New(w, flushlog.Interval)
	res, runErr := vm.Run(ctx)
	err = sink.l.Close() // and f
	switch {
	case err != nil:
		err = fmt.Errorf("writing %s (what was written is kept there): %w", partial, err)
	case !sink.ended:
		err = fmt.Errorf("the recording ended without its end event: the incomplete log is %s", partial)
	default:
		err = os.Rename(partial, path)
	}
	if runErr != nil {
		return res, runErr
	}
	return res, err
}

// recordedConsole logs the guest's console output as it goes out.
type recordedConsole struct {
	rec      *Recorder
	out      io.Writer
	released uint64
}

func (c *recordedConsole) Write(data []byte) (int, error) {
	if _, err := c.rec.Output(data, c.released); err != nil {
		return 0, err
	}
	n, err := c.out.Write(data)
	c.released += uint64(n)
	return n, err
}

// fileSink is RecordFile's Sink: events go to l, which the header makes.
type fileSink struct {
	l     *flushlog.Log
	ended bool
}

func (s *fileSink) Append(ev *logpb.Event) error {
	if s.l == nil {
		return fmt.Errorf("event %d before the log's header (the guest ran before it was loaded)", ev.GetSeq())
	}
	if err := s.l.Append(ev); err != nil {
		return err
	}
	if ev.GetEnd() != nil {
		s.ended = true
	}
	return nil
}

// ReplayFile replays the log file path on a new VM loaded with g, which
// must be prepared as the recording's was (the headers are compared
// first: a mismatch is a *logio.ConfigMismatchError). It returns the
// replay's outcome: nil once the replay has reached the recorded end
// state, else where it parted from the recording (a *DivergenceError).
func ReplayFile(ctx context.Context, path string, g *PreparedGuest, cfg FileConfig) (vmm.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return vmm.Result{}, err
	}
	defer f.Close()
	lr, err := logio.NewReader(f)
	if err != nil {
		return vmm.Result{}, fmt.Errorf("%s: %w", path, err)
	}
	recorded := lr.Header()
	if s := recorded.GetLandmarks(); s != "" && s != StrategyStateTransfer {
		return vmm.Result{}, fmt.Errorf("%s: landmarks recorded with strategy %q; this replayer loads %q", path, s, StrategyStateTransfer)
	}
	rp, err := NewReplayer(ReplayerConfig{Source: lr})
	if err != nil {
		return vmm.Result{}, err
	}
	out := cfg.Console
	if out == nil {
		out = io.Discard
	}
	cons := &checkedConsole{rp: rp, out: out}
	epoch := time.Unix(0, recorded.EpochUnixNano)
	vm, err := cfg.loadedVM(g, epoch, cons, rp)
	if err != nil {
		return vmm.Result{}, err
	}
	defer vm.Close()
	cons.vm = vm
	if err := logio.CompareHeaders(recorded, g.Header(vm, epoch, recorded.Verify)); err != nil {
		return vmm.Result{}, fmt.Errorf("%s cannot replay on this VM: %w", path, err)
	}
	return vm.Run(ctx)
}

// checkedConsole hands the replayed guest's output to the replayer, which
// compares it with the recording's (a difference is the replay's sticky
// error: it stops the run).
type checkedConsole struct {
	rp  *Replayer
	vm  *vmm.VM
	out io.Writer
}

func (c *checkedConsole) Write(data []byte) (int, error) {
	if c.vm != nil {
		c.rp.Output(c.vm.Point(), data)
	}
	return c.out.Write(data)
}
