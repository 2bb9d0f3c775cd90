package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/split"
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
	kickAfter   time.Duration
	statusEvery time.Duration
	quiet       bool
	tlsDir      string
	insecure    bool
	metricsAddr string
	logFormat   string
	arbiter     string // etcd://h1:2379,...; empty: the file arbiter on --split-dir
	etcdCA      string
	etcdCert    string
	etcdKey     string
}

// defaultTLSDir is where ftvm primary/backup look for the pair's
// certificates unless --tls-dir says otherwise.
const defaultTLSDir = "ftkvm-certs"

func (o *pairOptions) register(fs *flag.FlagSet) {
	o.guest.register(fs, scopePair)
	fs.StringVar(&o.splitDir, "split-dir", "", "directory on storage both hosts mount, for the split-brain test-and-set (required unless --arbiter)")
	fs.StringVar(&o.arbiter, "arbiter", "", "the split-brain test-and-set on an etcd cluster instead of --split-dir: etcd://HOST:PORT,HOST:PORT,... (a live side whose etcd lease lapses halts)")
	fs.StringVar(&o.etcdCA, "etcd-ca", "", "with --arbiter: the CA `file` (PEM) of the etcd members' certificates; talks TLS to etcd")
	fs.StringVar(&o.etcdCert, "etcd-cert", "", "with --arbiter: this node's client certificate `file` (PEM) for etcd, with --etcd-key")
	fs.StringVar(&o.etcdKey, "etcd-key", "", "with --arbiter: this node's client key `file` (PEM) for etcd, with --etcd-cert")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve the pair state on HOST:PORT: Prometheus metrics on /metrics, JSON on /status (read by 'ftvm status HOST:PORT')")
	fs.StringVar(&o.logFormat, "log-format", "text", "the format of the log records on stderr: text or json (log/slog's handlers: time, level, message, fields)")
	fs.StringVar(&o.pair, "pair", "ftvm", "name of the FT pair (claim files are named after it)")
	fs.StringVar(&o.node, "node", "", "this node's name in claims (default: primary@HOST or backup@HOST)")
	fs.DurationVar(&o.timeout, "ft-timeout", time.Second, "failure detection: the peer is declared dead after this long without heartbeats or log traffic")
	fs.DurationVar(&o.heartbeat, "heartbeat", 100*time.Millisecond, "heartbeat interval (at most half of --ft-timeout)")
	fs.DurationVar(&o.claim, "claim-timeout", 5*time.Second, "how long to keep trying an unreachable split-brain storage before giving up (and not going live)")
	fs.IntVar(&o.window, "window", 16<<20, "log bytes in flight before the primary's vCPU waits for the backup (half of it is the largest log entry, e.g. a landmark's pages)")
	fs.IntVar(&o.windowEnt, "window-entries", 0, "log entries in flight (the backup's maximum lag) before the primary's vCPU waits (0: the channel's default, 1 Mi)")
	fs.DurationVar(&o.kickAfter, "kick-after", 2*time.Millisecond, "how long an event (a timer tick, a DMA completion, a received frame) waits for a synchronous exit before the vCPU is kicked to take it between exits, at the cost of a state-transfer landmark in the log (the primary; a backup after it goes live)")
	fs.DurationVar(&o.statusEvery, "status-every", 2*time.Second, "period of the progress line on stderr")
	fs.BoolVar(&o.quiet, "q", false, "no progress lines on stderr")
	fs.StringVar(&o.tlsDir, "tls-dir", defaultTLSDir, "directory with the pair's certificates from 'ftvm certs' (ca.pem and this node's certificate and key): the log channel runs mutual TLS 1.3 with them")
	fs.BoolVar(&o.insecure, "insecure", false, "run the log channel in plaintext with no authentication instead of TLS (anyone who reaches it can pose as the peer)")
}

// tlsConfig loads this side's TLS configuration from --tls-dir, or with
// --insecure warns on stderr what running without it gives up.
func (o *pairOptions) tlsConfig(flags *flag.FlagSet, role string) (*tls.Config, error) {
	if o.insecure {
		explicit := false
		flags.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "tls-dir" })
		if explicit {
			return nil, usageError{fmt.Errorf("--insecure and --tls-dir contradict each other")}
		}
		if role == "primary" {
			fmt.Fprintf(os.Stderr, "ftvm primary: WARNING: --insecure: the log channel is plaintext and unauthenticated: anyone who reaches the port can pose as the backup and read the guest's inputs\n")
		} else {
			fmt.Fprintf(os.Stderr, "ftvm backup: WARNING: --insecure: the log channel is plaintext and unauthenticated: anyone who reaches or redirects the connection can pose as the primary, feed this backup a false log and read the guest's inputs\n")
		}
		return nil, nil
	}
	load := pairtls.Primary
	if role == "backup" {
		load = pairtls.Backup
	}
	tc, err := load(o.tlsDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no certificates for the pair's mutual TLS in %s (%v): make them with 'ftvm certs %s' and give each host ca.pem and its own node's certificate and key, or run without authentication with --insecure", o.tlsDir, err, o.tlsDir)
		}
		return nil, fmt.Errorf("the pair's certificates in %s: %w (--insecure runs without authentication)", o.tlsDir, err)
	}
	return tc, nil
}

// config loads this side's certificates, prepares the guest and builds
// the ft configuration.
func (o *pairOptions) config(flags *flag.FlagSet, role string) (ft.Config, *preparedGuest, error) {
	if err := o.check(); err != nil {
		return ft.Config{}, nil, err
	}
	tc, err := o.tlsConfig(flags, role)
	if err != nil {
		return ft.Config{}, nil, err
	}
	g, err := o.guest.prepare()
	if err != nil {
		return ft.Config{}, nil, err
	}
	status := o.statusEvery
	log := os.Stderr
	logger, err := o.logger(log)
	if err != nil {
		g.close()
		return ft.Config{}, nil, err
	}
	cfg := ft.Config{
		Guest: ft.Guest{
			Spec:    g.config(vmm.Config{}).Spec,
			Options: g.config(vmm.Config{}).Options,
			Load:    g.load,
			Header:  func(vm *vmm.VM, epoch time.Time) *logpb.Header { return header(g, vm, epoch, false) },
			Bare:    g.bare,
		},
		TLS: tc, Insecure: o.insecure,
		SplitDir: o.splitDir, Pair: o.pair, Node: o.node,
		ClaimTimeout: o.claim, Timeout: o.timeout, Heartbeat: o.heartbeat, WindowBytes: o.window, WindowEntries: o.windowEnt,
		Output: os.Stdout, Input: os.Stdin, Log: log, Logger: logger, StatusEvery: status, KickAfter: o.kickAfter,
	}
	if o.quiet {
		cfg.StatusEvery = -1
		cfg.Log, cfg.Logger = discardLog{}, nil
	}
	if o.arbiter != "" {
		if cfg.NewArbiter, err = o.etcdArbiter(role); err != nil {
			g.close()
			return ft.Config{}, nil, err
		}
	}
	if g.devs != nil && g.devs.nic != nil {
		announceLog := cfg.Log
		if cfg.Logger != nil {
			announceLog = recordWriter{cfg.Logger.With("role", role)} // JSON stays JSON
		}
		cfg.OnLive = func() { g.devs.announce(announceLog) }
	}
	return cfg, g, nil
}

// openEtcd connects to the etcd arbiter's cluster (split.Open).
var openEtcd = split.Open

// etcdArbiter connects to --arbiter's etcd cluster and returns the pair's
// arbiter constructor, for ft.Config.NewArbiter. The node is named as ft
// names it (ft.DefaultNode) unless --node says otherwise, so that the
// claims and the pair's hello agree.
func (o *pairOptions) etcdArbiter(role string) (func(uint64) (split.Arbiter, error), error) {
	node := o.node
	if node == "" {
		node = ft.DefaultNode(role)
	}
	a, err := openEtcd(o.arbiter, split.EtcdConfig{Pair: o.pair, Node: node, CAFile: o.etcdCA, CertFile: o.etcdCert, KeyFile: o.etcdKey})
	if err != nil {
		return nil, fmt.Errorf("--arbiter %s: %w", o.arbiter, err)
	}
	return a, nil
}

// check refuses contradictory or missing pair flags before anything is
// built.
func (o *pairOptions) check() error {
	switch {
	case o.splitDir == "" && o.arbiter == "":
		return usageError{fmt.Errorf("--split-dir is required (a directory both nodes mount), or --arbiter etcd://HOST:PORT,...")}
	case o.splitDir != "" && o.arbiter != "":
		return usageError{fmt.Errorf("--split-dir and --arbiter contradict each other: the pair's claims live in one place")}
	case o.arbiter == "" && (o.etcdCA != "" || o.etcdCert != "" || o.etcdKey != ""):
		return usageError{fmt.Errorf("--etcd-ca, --etcd-cert and --etcd-key go with --arbiter etcd://...")}
	case o.arbiter != "":
		if _, err := split.ParseEtcdURL(o.arbiter); err != nil {
			return usageError{fmt.Errorf("--arbiter: %w", err)}
		}
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return usageError{fmt.Errorf("--log-format %q: want text or json", o.logFormat)}
	}
	return nil
}

// logger is the side's log/slog logger on w, in --log-format; nil for
// text, which ft makes itself from Config.Log.
func (o *pairOptions) logger(w io.Writer) (*slog.Logger, error) {
	switch o.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	case "text", "":
		return nil, nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", o.logFormat)}
}

// serveMetrics opens --metrics-addr (if set) and serves the side's status
// from m on it, as ftmetrics.Handler; stop closes it, addr is where it
// listens. The address is bound before the side starts, so a taken port
// is an error at once.
func (o *pairOptions) serveMetrics(role string, m *ft.Monitor) (stop func(), addr string, err error) {
	if o.metricsAddr == "" {
		return func() {}, "", nil
	}
	l, err := net.Listen("tcp", o.metricsAddr)
	if err != nil {
		return nil, "", fmt.Errorf("--metrics-addr: %w", err)
	}
	srv := &http.Server{Handler: ftmetrics.Handler(role, m.Status), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return func() { srv.Close() }, l.Addr().String(), nil
}

// recordWriter turns lines written to it into Info records of l, for
// code that logs to an io.Writer.
type recordWriter struct{ l *slog.Logger }

func (w recordWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.l.Info(line)
	}
	return len(b), nil
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
		return exitUsage, err
	}
	if *listen == "" {
		return exitUsage, usageError{fmt.Errorf("--listen ADDR is required")}
	}
	cfg, g, err := o.config(fs, "primary")
	if err != nil {
		return exitCode(err), err
	}
	defer g.close()
	if err := checkKVM(); err != nil {
		return exitNoKVM, err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return exitError, err
	}
	cfg.Monitor = new(ft.Monitor)
	stopMetrics, _, err := o.serveMetrics("primary", cfg.Monitor)
	if err != nil {
		l.Close()
		return exitError, err
	}
	defer stopMetrics()
	info := infof(o.quiet)
	info("primary: %s with %d MiB; listening on %s (%s)", g.name, g.memory>>20, l.Addr(), security(o))
	res, runErr := ft.RunPrimary(ctx, cfg, l, *wait)
	return report(info, res.Run, runErr)
}

func cmdBackup(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	var o pairOptions
	o.register(fs)
	connect := fs.String("connect", "", "the primary's address, e.g. host:7700 (required)")
	wait := fs.Duration("connect-wait", 30*time.Second, "how long to keep trying to reach the primary")
	runLog := fs.String("run-log", "", "write the log of the whole run to this `file`: the primary's log as this backup replays it and, if it goes live, what it records of its own run from there; 'ftvm replay' replays it across the failover (with --disk-mode nonshared onto a copy of the starting image, it rebuilds the disk the run ended with)")
	if err := parseFlags(fs, args); err != nil {
		return exitUsage, err
	}
	if *connect == "" {
		return exitUsage, usageError{fmt.Errorf("--connect ADDR is required")}
	}
	cfg, g, err := o.config(fs, "backup")
	if err != nil {
		return exitCode(err), err
	}
	defer g.close()
	if err := checkKVM(); err != nil {
		return exitNoKVM, err
	}
	cfg.Monitor = new(ft.Monitor)
	stopMetrics, _, err := o.serveMetrics("backup", cfg.Monitor)
	if err != nil {
		return exitError, err
	}
	defer stopMetrics()
	if *runLog != "" {
		f, err := os.OpenFile(*runLog, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return exitError, fmt.Errorf("--run-log: %w (it must not exist yet)", err)
		}
		cfg.RunLog = f // closed by RunBackup
	}
	info := infof(o.quiet)
	info("backup: %s with %d MiB; connecting to the primary at %s (%s)", g.name, g.memory>>20, *connect, security(o))
	res, runErr := ft.RunBackup(ctx, cfg, *connect, *wait)
	return report(info, res.Run, runErr)
}

func security(o pairOptions) string {
	if o.insecure {
		return "plaintext, unauthenticated: --insecure"
	}
	return "mutual TLS 1.3 with the certificates in " + o.tlsDir
}
