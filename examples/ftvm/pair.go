package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// pairOptions are the flags both sides of an FT pair take.
type pairOptions struct {
	guest       guestOptions
	splitDir    string
	pair, node  string
	timeout     time.Duration
	heartbeat   time.Duration
	claim       time.Duration
	window      int
	windowEnt   int
	statusEvery time.Duration
	quiet       bool
}

func (o *pairOptions) register(fs *flag.FlagSet) {
	o.guest.register(fs)
	fs.StringVar(&o.splitDir, "split-dir", "", "directory on storage both hosts mount, for the split-brain test-and-set (required)")
	fs.StringVar(&o.pair, "pair", "ftvm", "name of the FT pair (claim files are named after it)")
	fs.StringVar(&o.node, "node", "", "this node's name in claims (default: primary@HOST or backup@HOST)")
	fs.DurationVar(&o.timeout, "ft-timeout", time.Second, "failure detection: the peer is declared dead after this long without heartbeats or log traffic")
	fs.DurationVar(&o.heartbeat, "heartbeat", 100*time.Millisecond, "heartbeat interval (at most half of --ft-timeout)")
	fs.DurationVar(&o.claim, "claim-timeout", 5*time.Second, "how long to keep trying an unreachable split-brain storage before giving up (and not going live)")
	fs.IntVar(&o.window, "window", 16<<20, "log bytes in flight before the primary's vCPU waits for the backup (half of it is the largest log entry, e.g. a landmark's pages)")
	fs.IntVar(&o.windowEnt, "window-entries", 0, "log entries in flight (the backup's maximum lag) before the primary's vCPU waits (0: the channel's default, 1 Mi)")
	fs.DurationVar(&o.statusEvery, "status-every", 2*time.Second, "period of the progress line on stderr")
	fs.BoolVar(&o.quiet, "q", false, "no progress lines on stderr")
}

// config prepares the guest and builds the ft configuration.
func (o *pairOptions) config() (ft.Config, *preparedGuest, error) {
	if o.splitDir == "" {
		return ft.Config{}, nil, usageError{fmt.Errorf("--split-dir is required (a directory both nodes mount)")}
	}
	g, err := o.guest.prepare()
	if err != nil {
		return ft.Config{}, nil, err
	}
	status := o.statusEvery
	log := os.Stderr
	cfg := ft.Config{
		Guest: ft.Guest{
			Spec:    g.config(vmm.Config{}).Spec,
			Options: g.config(vmm.Config{}).Options,
			Load:    g.load,
			Header:  func(vm *vmm.VM, epoch time.Time) *logpb.Header { return header(g, vm, epoch, false) },
			Bare:    g.bare,
		},
		SplitDir: o.splitDir, Pair: o.pair, Node: o.node,
		ClaimTimeout: o.claim, Timeout: o.timeout, Heartbeat: o.heartbeat, WindowBytes: o.window, WindowEntries: o.windowEnt,
		Output: os.Stdout, Input: os.Stdin, Log: log, StatusEvery: status,
	}
	if o.quiet {
		cfg.StatusEvery = -1
		cfg.Log = discardLog{}
	}
	return cfg, g, nil
}

type discardLog struct{}

func (discardLog) Write(b []byte) (int, error) { return len(b), nil }

func cmdPrimary(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("primary", flag.ContinueOnError)
	var o pairOptions
	o.register(fs)
	listen := fs.String("listen", "", "address to accept the backup's connection on, e.g. :7700 (required)")
	wait := fs.Duration("wait-backup", 60*time.Second, "how long to wait for the backup before running unprotected (0: forever)")
	if err := parseFlags(fs, args); err != nil {
		return 2, err
	}
	if *listen == "" {
		return 2, usageError{fmt.Errorf("--listen ADDR is required")}
	}
	cfg, g, err := o.config()
	if err != nil {
		return 1, err
	}
	defer g.close()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return 1, err
	}
	info := infof(o.quiet)
	info("primary: %s with %d MiB; listening on %s", g.name, g.memory>>20, l.Addr())
	res, runErr := ft.RunPrimary(ctx, cfg, l, *wait)
	return report(info, res.Run, runErr)
}

func cmdBackup(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	var o pairOptions
	o.register(fs)
	connect := fs.String("connect", "", "the primary's address, e.g. host:7700 (required)")
	wait := fs.Duration("connect-wait", 30*time.Second, "how long to keep trying to reach the primary")
	if err := parseFlags(fs, args); err != nil {
		return 2, err
	}
	if *connect == "" {
		return 2, usageError{fmt.Errorf("--connect ADDR is required")}
	}
	cfg, g, err := o.config()
	if err != nil {
		return 1, err
	}
	defer g.close()
	info := infof(o.quiet)
	info("backup: %s with %d MiB; connecting to the primary at %s", g.name, g.memory>>20, *connect)
	res, runErr := ft.RunBackup(ctx, cfg, *connect, *wait)
	return report(info, res.Run, runErr)
}
