package main

import (
	"context"
	"errors"
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
	o.register(fs)
	console := fs.Bool("console", false, "show the guest's console output (off: a replay's output is the recording's)")
	timeout := fs.Duration("timeout", 0, "stop the replay after this long (0: no limit)")
	quiet := fs.Bool("q", false, "no progress or summary lines on stderr")
	// The log file is the one positional argument, before or after flags.
	var file string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, usageError{err}
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 || file == "" {
		return 2, usageError{fmt.Errorf("usage: ftvm replay FILE [guest flags]")}
	}
	f, err := os.Open(file)
	if err != nil {
		return 1, err
	}
	defer f.Close()
	lr, err := logio.NewReader(f)
	if err != nil {
		return 1, fmt.Errorf("%s: %w", file, err)
	}
	g, err := o.prepare()
	if err != nil {
		return 1, err
	}
	defer g.close()
	recorded := lr.Header()
	if s := recorded.GetLandmarks(); s != "" && s != replay.StrategyStateTransfer {
		return 1, fmt.Errorf("%s: landmarks recorded with strategy %q; this replayer loads %q", file, s, replay.StrategyStateTransfer)
	}
	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: lr})
	if err != nil {
		return 1, err
	}
	cons := &replayConsole{rp: rp, out: io.Discard}
	if *console {
		cons.out = os.Stdout
	}
	epoch := time.Unix(0, recorded.EpochUnixNano)
	vm, err := vmm.New(g.config(vmm.Config{Spec: vmm.Spec{Epoch: epoch}, Options: vmm.Options{Console: cons, Driver: rp}}))
	if err != nil {
		return 1, err
	}
	defer vm.Close()
	cons.vm = vm
	if err := g.load(vm); err != nil {
		return 1, err
	}
	if err := logio.CompareHeaders(recorded, header(g, vm, epoch, recorded.Verify)); err != nil {
		return 1, fmt.Errorf("%s cannot replay on this VM: %w", file, err)
	}
	info := infof(*quiet)
	info("replaying %s on %s", file, g.name)
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	res, runErr := vm.Run(ctx)
	st := rp.Stats()
	info("replayed %d events, %d landmarks (%s: %d pages loaded)", st.Events, st.Landmarks, replay.StrategyStateTransfer, st.LandmarkPages)
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
