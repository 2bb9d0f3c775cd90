package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/vmm"
)

func cmdReplay(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	var o guestOptions
	o.register(fs, scopeLog)
	console := fs.Bool("console", false, "show the guest's console output (off: a replay's output is the recording's)")
	timeout := fs.Duration("timeout", 0, "stop the replay after this long (0: no limit)")
	quiet := fs.Bool("q", false, "no progress or summary lines on stderr")
	progressPeriod := fs.Duration("progress", progressEvery, "period of the progress line on stderr (0: none)")
	file, err := oneArg(fs, args, "log FILE")
	if err != nil {
		return exitUsage, err
	}
	f, err := os.Open(file)
	if err != nil {
		return exitError, err
	}
	defer f.Close()
	lr, err := logio.NewReader(f)
	if err != nil {
		return exitError, fmt.Errorf("%s: %w", file, err)
	}
	g, err := o.prepare()
	if err != nil {
		return exitError, err
	}
	defer g.close()
	if err := checkKVM(); err != nil {
		return exitNoKVM, err
	}
	recorded := lr.Header()
	if s := recorded.GetLandmarks(); s != "" && s != replay.StrategyStateTransfer {
		return exitError, fmt.Errorf("%s: landmarks recorded with strategy %q; this replayer loads %q", file, s, replay.StrategyStateTransfer)
	}
	var prog progress
	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: countingSource{lr, &prog}})
	if err != nil {
		return exitError, err
	}
	cons := &replayConsole{rp: rp, out: io.Discard}
	if *console {
		cons.out = os.Stdout
	}
	epoch := time.Unix(0, recorded.EpochUnixNano)
	vm, err := vmm.New(g.config(vmm.Config{Spec: vmm.Spec{Epoch: epoch}, Options: vmm.Options{Console: cons, Driver: rp}}))
	if err != nil {
		return exitError, err
	}
	defer vm.Close()
	cons.vm = vm
	if err := g.load(vm); err != nil {
		return exitError, err
	}
	if err := logio.CompareHeaders(recorded, header(g, vm, epoch, recorded.Verify)); err != nil {
		return exitError, fmt.Errorf("%s cannot replay on this VM: %w", file, err)
	}
	info := infof(*quiet)
	info("replaying %s on %s", file, g.name)
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	if *quiet {
		*progressPeriod = 0
	}
	stopProgress := prog.print(os.Stderr, "replaying", *progressPeriod)
	res, runErr := vm.Run(ctx)
	stopProgress()
	st := rp.Stats()
	info("replayed %d events, %d landmarks (%s: %d pages loaded), %d deliveries at window exits by count", st.Events, st.Landmarks, replay.StrategyStateTransfer, st.LandmarkPages, st.Windows)
	if st.Handovers > 0 {
		info("replayed across a failover: the backup's own run from %v on (%d handover events)", *st.JoinedAt, st.Handovers)
	}
	code, err := report(info, res, runErr)
	if err == nil {
		info("replay reached the recorded end state")
	}
	printFingerprint(vm)
	return code, err
}

// replayConsole is a replay's console: what the guest writes is checked
// against the log's Output events (an FT primary's log, or a backup's log
// of a whole run, has them) and shown with --console.
type replayConsole struct {
	rp  *replay.Replayer
	vm  *vmm.VM
	out io.Writer
}

func (c *replayConsole) Write(data []byte) (int, error) {
	if c.vm != nil {
		c.rp.Output(c.vm.Point(), data) // a difference is the replay's sticky error: it stops the run
	}
	return c.out.Write(data)
}
