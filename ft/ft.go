package ft

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/split"
	"github.com/ftkvm/ftkvm/vmm"
)

// Result is how one side's run ended.
type Result struct {
	Run vmm.Result // the guest's run (zero if it never started)
	// Outcome says in words how the side ended, e.g. "finished protected",
	// "went live", "halted: the backup is live".
	Outcome string
	// Live: the primary ran to the end, or the backup went live.
	Live bool
	// Released counts the console bytes this side let out.
	Released uint64
	// Commit describes the output-commit delay (primary only): time from
	// the guest writing a console byte to the byte being released.
	Commit LatencyStats
	// CommitToChannel and CommitToAck are its two parts (for the output
	// released on an ack): from the guest's write to its log entry being
	// in the channel's send queue (the vCPU thread, the pump goroutine,
	// flow control), and from there to the release loop seeing the
	// backup's ack (the sender, TLS, the network, the backup's receiver
	// and the ack's way back).
	CommitToChannel, CommitToAck LatencyStats
	// RunLogErr is the first error writing Config.RunLog (backup only):
	// the log ends where it struck.
	RunLogErr error
}

// LatencyStats summarises a set of durations.
type LatencyStats struct {
	N             int
	P50, P99, Max time.Duration
}

func summarize(d []time.Duration) LatencyStats {
	if len(d) == 0 {
		return LatencyStats{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return LatencyStats{N: len(d), P50: d[len(d)/2], P99: d[len(d)*99/100], Max: d[len(d)-1]}
}

// Guest describes the VM both sides of a pair build. The two sides must
// describe the same VM: the primary's log header (without its RTC epoch)
// is hashed into the logging channel's ConfigHash, so a backup with a
// different kernel, initrd, command line, image, memory size or CPUID
// table is refused in the channel's handshake.
type Guest struct {
	// Spec is the machine: memory size and rdtsc sites. Its Epoch is
	// ft's: the primary's start time, which the backup reads from the log.
	Spec vmm.Spec
	// Options are diagnostics such as the exit trace. ft supplies the
	// console, console input, driver and clock itself (vmm.Options'
	// Console, ConsoleInput, Driver, Clock): setting them here is an error.
	Options vmm.Options
	// Load puts the guest into a new VM (vm.LoadLinux or vm.LoadBare)
	// and Header describes the loaded VM (replay.NewHeader): the default
	// MachineFactory's two steps (Config.NewMachine replaces them).
	Load   func(vm *vmm.VM) error
	Header func(vm *vmm.VM, epoch time.Time) *logpb.Header
	// Bare says the guest is a bare test image (no Linux kernel).
	Bare bool
}

// Config configures either side of a pair.
type Config struct {
	Guest Guest
	// NewMachine, if set, builds this side's machine instead of vmm.New
	// with Guest.Load and Guest.Header (which it then need not set).
	NewMachine MachineFactory
	// Dial, if set, connects the backup to the primary at addr instead
	// of TCP, tried until connectWait has passed.
	Dial func(ctx context.Context, addr string) (net.Conn, error)

	// SplitDir, Pair and Node configure the default arbiter, a
	// split.FileArbiter on SplitDir (shared storage both hosts mount). The
	// generation comes from the primary, in the pair's first log entry.
	SplitDir string
	Pair     string // default "ftvm"
	Node     string // default DefaultNode(role): "primary@HOST" / "backup@HOST"
	// NewArbiter, if set, replaces the FileArbiter.
	NewArbiter func(generation uint64) (split.Arbiter, error)
	// ClaimTimeout bounds the test-and-set, retries included (an
	// unreachable storage is retried until then). Default 5 s.
	ClaimTimeout time.Duration

	// Timeout and Heartbeat are the failure detector: a side that hears
	// nothing from its peer for Timeout declares it dead. Heartbeats are
	// sent every Heartbeat when there is no log traffic. Defaults 1 s and
	// 100 ms. Both sides should use the same values.
	Timeout, Heartbeat time.Duration
	// TLS is this side's half of the log channel's mutual TLS 1.3: the
	// primary is the TLS client (its certificate, RootCAs with the CA of
	// the backup's certificate, ServerName), the backup the TLS server
	// (its certificate, ClientCAs). pairtls.Primary and pairtls.Backup load
	// them from the files `ftvm certs` (pairtls.Generate) makes, and also
	// check that the peer's certificate names the other node. The channel
	// refuses a config that would let a peer in unverified, and requires a
	// verified certificate chain from the peer. Required unless Insecure.
	TLS *tls.Config
	// Insecure runs the log channel in plaintext with no authentication
	// (TLS must be nil): anyone who reaches the primary's port and knows
	// the VM configuration can pose as the backup and read every input of
	// the guest, and anyone who can redirect the backup's connection can
	// pose as the primary and feed it a false log. Only for tests and
	// links nobody else can reach.
	Insecure bool

	// WindowBytes bounds the log in flight (unacknowledged on the primary,
	// buffered and not yet replayed on the backup): the primary's vCPU
	// waits when it is full. A smaller window means less to replay at
	// failover. Default 16 MiB: a state-transfer landmark carries the
	// pages written since the previous one, and the window must hold two
	// of the largest (MaxEntryBytes is half the window, at most 32 MiB).
	WindowBytes int
	// WindowEntries bounds the same in log entries (default: the channel's,
	// 1 Mi). The backup's lag, and so the replay a failover needs, is at
	// most this many entries; a small value slows the primary to the
	// backup's replay speed.
	WindowEntries int

	// Output receives the guest's console output once it may leave the
	// machine (default os.Stdout). Input is the console input (primary; the
	// backup's after it goes live).
	Output io.Writer
	Input  io.Reader
	// Logger receives the side's log records (log/slog), each with the
	// side's role: Info for progress, Warn for a lost peer, Error for a
	// halt. If nil, a text handler writes them to Log (default
	// os.Stderr).
	Logger *slog.Logger
	Log    io.Writer
	// StatusEvery is the period of the progress record and of the status
	// reports (OnStatus, Monitor) between state changes (default 2 s,
	// negative: none; state changes are reported anyway).
	StatusEvery time.Duration
	// OnStatus, if set, hears the side's Status at every change of the
	// pair's state and every StatusEvery, in order, on ft's goroutines:
	// it must not block. Monitor, if set, keeps the latest.
	OnStatus func(Status)
	Monitor  *Monitor
	// KickAfter: see replay.RecorderConfig.KickAfter.
	KickAfter time.Duration
	// OnLive, if set, runs on the backup's vCPU thread once it has won
	// the pair and gone live, before its devices re-issue the requests
	// the log did not complete: the place to announce the guest's
	// network address from this host (a gratuitous ARP), as a VRRP
	// router does when it takes an address over.
	OnLive func()
	// RunLog, if set, receives the backup's log of the whole run: the
	// primary's log as the backup replays it and, if the backup goes live,
	// a Handover event and what it records of its own run from there (see
	// replay.ReplayerConfig.Continue), ending like any recording. `ftvm
	// replay` replays it across the failover: with a disk image in
	// non-shared mode it rebuilds the disk the run ended with. A write
	// error ends the log, not the run (Result.RunLogErr). The backup
	// closes it (if it is an io.Closer) when the run ends.
	RunLog io.Writer
}

func (c *Config) defaults(role string) {
	if c.Pair == "" {
		c.Pair = "ftvm"
	}
	if c.Node == "" {
		c.Node = DefaultNode(role)
	}
	if c.ClaimTimeout == 0 {
		c.ClaimTimeout = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 100 * time.Millisecond
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = 16 << 20
	}
	if c.Output == nil {
		c.Output = os.Stdout
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
	if c.StatusEvery == 0 {
		c.StatusEvery = 2 * time.Second
	}
}

// DefaultNode is a side's node name in the pair's claims when Config.Node
// is empty: its role ("primary" or "backup"), "@", and the host name. An
// arbiter built outside ft (Config.NewArbiter) takes the same name.
func DefaultNode(role string) string {
	h, _ := os.Hostname()
	return role + "@" + h
}

// ErrNoTLS is returned when Config has neither TLS nor Insecure.
var ErrNoTLS = errors.New("ft: no TLS configuration for the log channel (Config.TLS, e.g. from pairtls); set Config.Insecure to run the pair unauthenticated in plaintext")

// checkSecurity checks that the pair authenticates, or says it will not.
func (c *Config) checkSecurity() error {
	switch {
	case c.TLS == nil && !c.Insecure:
		return ErrNoTLS
	case c.TLS != nil && c.Insecure:
		return errors.New("ft: Config.Insecure is set together with Config.TLS: choose one")
	}
	return nil
}

// security describes the channel's protection for status lines.
func (c *Config) security() string {
	if c.TLS == nil {
		return "plaintext, UNAUTHENTICATED (insecure)"
	}
	return "mutual TLS 1.3"
}

func (c *Config) channel(hash [32]byte) logchannel.Config {
	return logchannel.Config{
		TLS:               c.TLS,
		ConfigHash:        hash,
		WindowBytes:       c.WindowBytes,
		WindowEntries:     c.WindowEntries,
		MaxEntryBytes:     min(c.WindowBytes/2, 32<<20),
		HeartbeatInterval: c.Heartbeat,
		Timeout:           c.Timeout,
	}
}

func (c *Config) arbiter(gen uint64) (split.Arbiter, error) {
	if c.NewArbiter != nil {
		return c.NewArbiter(gen)
	}
	if c.SplitDir == "" {
		return nil, errors.New("no split-brain arbiter: set the shared storage directory (--split-dir)")
	}
	return split.NewFileArbiter(split.FileConfig{Dir: c.SplitDir, Pair: c.Pair, Node: c.Node, Generation: gen})
}

// ErrConfigMismatch is returned when the backup's VM is not the primary's.
var ErrConfigMismatch = errors.New("backup's VM configuration (kernel/initrd/cmdline/CPUID/memory) differs from the primary's")

// configHash hashes everything the two VMs must agree on: the log header
// without the RTC epoch (which the primary sends in its hello) and the
// free-text recorder field.
func configHash(h *logpb.Header) ([32]byte, error) {
	c := proto.Clone(h).(*logpb.Header)
	c.EpochUnixNano, c.Recorder = 0, ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// hello is the pair's first log entry: the primary's full header (with the
// RTC epoch the backup must use) and the split-brain generation.
type hello struct {
	Header     []byte `json:"header"`
	Generation uint64 `json:"generation"`
	Pair       string `json:"pair"`
	Primary    string `json:"primary"`
}

// claim runs the test-and-set, retrying an unreachable storage until
// ClaimTimeout (judgeClaim decides). It returns evClaimWon,
// evClaimLost with an error wrapping split.ErrLost, or evClaimUnreachable
// with the last error (do not go live).
func claim(a split.Arbiter, timeout time.Duration) (pairEvent, error) {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := contextWithDeadline(deadline)
		err := a.TestAndSet(ctx)
		cancel()
		ev, retry := judgeClaim(err, time.Now(), deadline)
		if !retry {
			return ev, err
		}
		time.Sleep(claimRetry)
	}
}

// logger is the side's structured logger: Config.Logger, or a text
// handler on Config.Log, with the side's role on every record. Messages
// keep the words scripts and tests look for ("LIVE at", "PRIMARY LOST",
// "re-sending N console bytes from offset M"); the figures are fields too.
func (c *Config) logger(role string) *slog.Logger {
	l := c.Logger
	if l == nil {
		l = slog.New(slog.NewTextHandler(c.Log, nil))
	}
	return l.With("role", role)
}

// vmConfig is the VM configuration of one side: the guest's Spec with
// ft's epoch, and its diagnostic Options with ft's console and driver.
func (g *Guest) vmConfig(epoch time.Time, console io.Writer, d vmm.Driver) (vmm.Config, error) {
	o := g.Options
	if o.Console != nil || o.ConsoleInput != nil || o.Driver != nil || o.Clock != nil {
		return vmm.Config{}, fmt.Errorf("%w: ft.Guest.Options sets the console, console input, driver or clock, which ft supplies", vmm.ErrInvalidConfig)
	}
	s := g.Spec
	s.Epoch = epoch
	o.Console, o.Driver = console, d
	return vmm.Config{Spec: s, Options: o}, nil
}
