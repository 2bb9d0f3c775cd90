package ft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/split"
	"github.com/ftkvm/ftkvm/vmm"
)

const consumedBatch = 64

type backup struct {
	cfg Config
	log *slog.Logger
	rep *reporter
	lag lagTracker // entries received and not yet replayed
	gen uint64     // the pair's generation, from the hello
	ctx context.Context
	// runCtx is the guest's run; cancelled when the side halts after
	// going live (its claim lost).
	runCtx    context.Context
	runCancel context.CancelFunc
	recv      *logchannel.Receiver
	rp        *replay.Replayer
	rl        *runLog // Config.RunLog
	vm        Machine
	arb       split.Arbiter

	replayed  atomic.Uint64 // last channel seq handed to the replay
	logBytes  atomic.Uint64 // bytes of the entries taken from the channel
	joined    atomic.Bool   // the primary's hello arrived
	revoked   atomic.Bool   // halted after going live: the console lets nothing more out
	lastExits atomic.Uint64
	live      atomic.Bool  // mirrors console.live for the status goroutine
	lostAt    atomic.Int64 // unix nanos when the primary was declared lost
	ended     int          // 0: log still open, 1: orderly end, 2: disconnected
	cause     error

	mu      sync.Mutex // guards pair and haltErr: the watch goroutines step it too
	pair    pairCore
	haltErr error // why the live backup halted (its claim was lost)
	// watchers: watchClaim, ended (by runCancel) before RunBackup returns.
	watchers sync.WaitGroup
	// released mirrors console.sent for the status.
	released atomic.Uint64

	// console is the output the primary may not have let out; used on the
	// vCPU thread only (and after the run).
	console resendLog
}

// RunBackup runs the guest as the backup of an FT pair: it connects to the
// primary at addr (retrying for up to connectWait), checks that both run
// the same VM, and replays the primary's log in lockstep with its own
// console output suppressed. When the primary is lost it replays every
// entry it received, runs the split-brain test-and-set and, if it wins,
// goes live: it re-sends the console output the primary may not have
// released (duplicates are allowed, losses are not) and runs on as a
// standalone VM. If it loses it halts; if the storage cannot be reached it
// does not go live.
func RunBackup(ctx context.Context, cfg Config, addr string, connectWait time.Duration) (Result, error) {
	cfg.defaults("backup")
	if err := cfg.checkSecurity(); err != nil {
		return Result{}, err
	}
	b := &backup{cfg: cfg, log: cfg.logger("backup"), rep: newReporter("backup", &cfg), ctx: ctx, pair: newBackupCore()}
	b.runCtx, b.runCancel = context.WithCancel(ctx)
	defer b.watchers.Wait()
	defer b.runCancel()
	b.report()

	// The configuration hash, from a VM built the same way as the real one
	// (whose RTC epoch comes from the primary).
	hash, err := b.probeHash()
	if err != nil {
		return Result{}, err
	}
	if err := cfg.channel(hash).Validate(false); err != nil {
		return Result{}, fmt.Errorf("the log channel's configuration: %w", err)
	}
	conn, err := b.dial(ctx, addr, connectWait)
	if err != nil {
		return Result{}, fmt.Errorf("connecting to the primary at %s: %w", addr, err)
	}
	b.recv, err = logchannel.NewReceiver(ctx, conn, cfg.channel(hash))
	if err != nil {
		conn.Close()
		if errors.Is(err, logchannel.ErrConfigMismatch) {
			return Result{}, fmt.Errorf("%w (refused in the logging channel's handshake: %v)", ErrConfigMismatch, err)
		}
		if errors.Is(err, logchannel.ErrAuth) {
			return Result{}, fmt.Errorf("TLS with the primary at %s failed: it did not authenticate as the pair's primary, or refused this backup's certificate: %w", addr, err)
		}
		if cfg.TLS == nil && errors.Is(err, logchannel.ErrCorrupt) {
			return Result{}, fmt.Errorf("handshake with the primary at %s (is it running TLS? this backup runs without, Insecure): %w", addr, err)
		}
		return Result{}, fmt.Errorf("handshake with the primary at %s: %w", addr, err)
	}
	defer b.recv.Close()
	b.log.Info(fmt.Sprintf("connected to the primary at %s (%s)", addr, cfg.security()))

	seq, entry, err := b.recv.Next(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("waiting for the primary's hello: %w", err)
	}
	var h hello
	hdr := &logpb.Header{}
	if err := json.Unmarshal(entry, &h); err != nil {
		return Result{}, fmt.Errorf("the primary's hello: %w", err)
	}
	if err := logio.CheckDecoded(h.Header, hdr); err != nil {
		return Result{}, fmt.Errorf("the primary's log header: refused before decoding: %w", err)
	}
	if err := proto.Unmarshal(h.Header, hdr); err != nil {
		return Result{}, fmt.Errorf("the primary's log header: %w", err)
	}
	b.recv.Consumed(seq)
	b.replayed.Store(seq)
	b.logBytes.Add(uint64(len(entry)))
	b.gen = h.Generation
	b.joined.Store(true)
	b.report() // joined: protected from here
	if b.arb, err = cfg.arbiter(h.Generation); err != nil {
		return Result{}, err
	}

	rcfg := replay.ReplayerConfig{Source: b, GoLive: b.goLive, LiveInput: cfg.Input, LiveKickAfter: cfg.KickAfter}
	if cfg.RunLog != nil {
		b.rl = newRunLog(cfg.RunLog, hdr, b.log)
		rcfg.Continue, rcfg.ContinueReason = b.rl, b.why
	}
	b.rp, err = replay.NewReplayer(rcfg)
	if err != nil {
		return Result{}, err
	}
	epoch := time.Unix(0, hdr.EpochUnixNano)
	vc, err := cfg.Guest.vmConfig(epoch, b, b.rp)
	if err != nil {
		return Result{}, err
	}
	var own *logpb.Header
	if b.vm, own, err = cfg.machine(vc); err != nil {
		return Result{}, err
	}
	defer b.vm.Close()
	if err := logio.CompareHeaders(hdr, own); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrConfigMismatch, err)
	}
	b.log.Info(fmt.Sprintf("pair %q generation %d with primary %s: replaying its log (console output suppressed)", h.Pair, h.Generation, h.Primary),
		"pair", h.Pair, "generation", h.Generation, "primary", h.Primary, "state", stReplaying.String())
	b.report()

	failDone := make(chan struct{})
	go b.watch(failDone)
	defer close(failDone)
	// The status goroutine ends before the run returns: no report after.
	statusStop, statusDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(statusDone); b.status(statusStop) }()
	defer func() { close(statusStop); <-statusDone }()

	res, runErr := b.vm.Run(b.runCtx)
	r := Result{Run: res}
	if b.revoked.Load() {
		b.mu.Lock()
		runErr = &haltError{"halted: " + b.pair.why, b.haltErr}
		b.mu.Unlock()
	}
	switch {
	case b.live.Load() || runErr != nil:
	case b.ended == 2:
		// The guest finished in the replay, but the primary died before
		// closing the log in order: the end of the output may not have
		// left it.
		b.log.Info(fmt.Sprintf("the guest finished in the replay, but the primary was lost before it closed the log: %v", b.cause))
		if err := b.takeOver(evRunEndedLogBroke, b.vm.Point()); err != nil {
			runErr = err
		}
	default:
		b.step(evRunEndedLogShut, "the primary completed the run")
	}
	r.Released = b.console.sent
	if b.rl != nil {
		if r.RunLogErr = b.rl.close(); r.RunLogErr != nil {
			b.log.Error(fmt.Sprintf("the run's log is incomplete: %v", r.RunLogErr))
		}
	}
	switch {
	case b.revoked.Load():
		r.Outcome = runErr.Error()
	case b.live.Load():
		r.Outcome, r.Live = "went live", true
	case runErr == nil:
		r.Outcome = "finished as backup (the primary completed the run)"
	default:
		r.Outcome = "stopped: " + runErr.Error()
	}
	st := b.rp.Stats()
	live := ""
	if st.LiveAt != nil {
		live = fmt.Sprintf(", live from %v", *st.LiveAt)
	}
	b.report()
	b.log.Info(fmt.Sprintf("%s after %d exits; replayed %d events (%d landmarks)%s; released %d console bytes",
		r.Outcome, res.Stats.SyncExits(), st.Events, st.Landmarks, live, r.Released),
		"outcome", r.Outcome, "exits", res.Stats.SyncExits(), "replayed", st.Events, "released", r.Released)
	return r, runErr
}

// probeHash builds a machine the way the real one will be (whose RTC
// epoch comes from the primary) only to hash its header.
func (b *backup) probeHash() ([32]byte, error) {
	s := b.cfg.Guest.Spec
	s.Epoch = time.Unix(0, 0)
	vm, hdr, err := b.cfg.machine(vmm.Config{Spec: s})
	if err != nil {
		return [32]byte{}, err
	}
	vm.Close()
	return configHash(hdr)
}

// dial connects to the primary (Config.Dial, default TCP), retrying until
// wait has passed.
func (b *backup) dial(ctx context.Context, addr string, wait time.Duration) (net.Conn, error) {
	dial := b.cfg.Dial
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		c, err := dial(ctx, addr)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Next is the replay's Source: the primary's log as it arrives.
func (b *backup) Next() (*logpb.Event, error) {
	if b.ended != 0 {
		return nil, io.EOF
	}
	seq, entry, err := b.recv.Next(b.ctx)
	if err != nil {
		switch {
		case errors.Is(err, io.EOF):
			b.ended = 1
			return nil, io.EOF
		case errors.Is(err, logchannel.ErrDisconnected):
			b.ended, b.cause = 2, err
			return nil, io.EOF
		}
		return nil, err
	}
	ev := &logpb.Event{}
	// An entry within the window can still decode to far more than its
	// size (empty repeated messages): refuse it before decoding.
	if err := logio.CheckDecoded(entry, ev); err != nil {
		return nil, fmt.Errorf("log entry %d: refused before decoding: %w", seq, err)
	}
	if err := proto.Unmarshal(append([]byte(nil), entry...), ev); err != nil {
		return nil, fmt.Errorf("log entry %d: %w", seq, err)
	}
	// Report consumption in batches: each report may wake the receiver's
	// writer, and the window (bytes) is far larger than a batch.
	if seq%consumedBatch == 0 {
		b.recv.Consumed(seq)
	}
	if ev.Seq+1 != seq {
		return nil, fmt.Errorf("log entry %d carries event %d", seq, ev.Seq)
	}
	b.replayed.Store(seq)
	b.lastExits.Store(ev.Exits)
	b.logBytes.Add(uint64(len(entry)))
	now := time.Now()
	b.lag.added(b.recv.Received(), 0, now)
	b.lag.took(seq, now)
	if b.rl != nil {
		b.rl.Append(ev)
	}
	return ev, nil
}

// goLive is the replay's GoLive, called on the vCPU thread once every
// received entry has been replayed.
func (b *backup) goLive(vm vmm.Machine, p vmm.Point) error {
	why := b.why()
	b.log.Info(fmt.Sprintf("log ended (%s) after entry %d; replayed all of it, at %v: claiming the pair on shared storage", why, b.replayed.Load(), p))
	return b.takeOver(evLogEnded, p)
}

// why says why the log ended.
func (b *backup) why() string {
	if b.cause != nil {
		return b.cause.Error()
	}
	return "the primary closed the log"
}

// takeOver claims the pair after ev (the log ended) and, if it wins,
// re-sends the console output the primary may not have let out. An error
// means this side does not go live.
func (b *backup) takeOver(ev pairEvent, p vmm.Point) error {
	if err := b.console.check(); err != nil {
		b.log.Error(fmt.Sprintf("%v; NOT going live", err))
		return fmt.Errorf("not going live: %w", err)
	}
	if act := b.step(ev, ""); act != actClaim {
		return fmt.Errorf("not going live: the backup does not claim the pair after %q (%s)", ev, act)
	}
	start := time.Now()
	ev, err := claim(b.arb, b.cfg.ClaimTimeout)
	switch ev {
	case evClaimLost:
		b.log.Error(fmt.Sprintf("LOST the test-and-set: %v; the primary is live: HALTING", err), "state", stHalted.String())
		b.step(ev, "the primary is live ("+err.Error()+")")
		return fmt.Errorf("halted: the primary is live (%w)", err)
	case evClaimUnreachable:
		b.log.Error(fmt.Sprintf("cannot reach the split-brain storage: %v; NOT going live", err), "state", stHalted.String())
		b.step(ev, "split-brain storage unreachable ("+err.Error()+")")
		return fmt.Errorf("not going live: %w", err)
	}
	if act := b.step(ev, "went live"); act != actGoLive {
		return fmt.Errorf("not going live: the backup does not go live after %q (%s)", ev, act)
	}
	from, tail, err := b.console.goLive()
	if err != nil { // cannot happen: checked before the claim
		return fmt.Errorf("not going live: %w", err)
	}
	since := ""
	if t := b.lostAt.Load(); t != 0 {
		since = fmt.Sprintf(", %v after the primary was declared lost", time.Since(time.Unix(0, t)).Round(time.Millisecond))
	}
	b.log.Warn(fmt.Sprintf("WON the test-and-set in %v: LIVE at %v%s; re-sending %d console bytes from offset %d",
		time.Since(start).Round(time.Millisecond), p, since, len(tail), from),
		"state", stLive.String(), "exits", p.Exits, "resend_bytes", len(tail), "resend_from", from)
	b.live.Store(true)
	b.watchers.Add(1)
	go func() { defer b.watchers.Done(); b.watchClaim() }()
	b.cfg.Output.Write(tail)
	b.console.wrote(len(tail))
	b.released.Add(uint64(len(tail)))
	if b.cfg.OnLive != nil {
		b.cfg.OnLive()
	}
	return nil
}

// step feeds the pair's state machine an event; the caller carries out
// the action.
func (b *backup) step(ev pairEvent, why string) pairAction {
	b.mu.Lock()
	act, err := b.pair.step(ev, why)
	b.mu.Unlock()
	if err != nil {
		b.log.Error(err.Error()) // a bug, but the state is unchanged
		return act
	}
	b.report()
	return act
}

// Write is the guest's console: checked against the log and held while
// replaying, written out once live.
func (b *backup) Write(data []byte) (int, error) {
	if b.console.live {
		if b.revoked.Load() {
			return len(data), nil // halted: the claim is lost
		}
		n, err := b.cfg.Output.Write(data)
		b.console.wrote(n)
		b.released.Add(uint64(n))
		return n, err
	}
	if err := b.rp.Output(b.vm.Point(), data); err != nil {
		return len(data), nil // the replay's sticky error stops the run
	}
	if err := b.console.check(); err != nil {
		return len(data), nil // reported once, below, and when the log ends
	}
	if err := b.console.replayed(data, b.rp.Released()); err != nil {
		b.log.Info(fmt.Sprintf("at %v: %v: this backup will not go live", b.vm.Point(), err))
	}
	return len(data), nil
}

func (b *backup) watch(done chan struct{}) {
	select {
	case <-done:
	case f := <-b.recv.Failed():
		b.lostAt.Store(time.Now().UnixNano())
		b.step(evPeerLost, "")
		b.log.Warn(fmt.Sprintf("PRIMARY LOST: %v; %d received entries still to replay", f, int64(f.LastReceived)-int64(b.replayed.Load())),
			"state", stDraining.String(), "last_received", f.LastReceived, "replayed", b.replayed.Load())
	}
}

// watchClaim halts the live backup if its arbiter reports that the
// claim it won is lost (an etcd lease not renewed in time): the VM may be
// started elsewhere, so the guest stops and its console lets nothing more
// out.
func (b *backup) watchClaim() {
	lost, reason := claimLoss(b.arb)
	if lost == nil {
		return
	}
	select {
	case <-b.runCtx.Done():
	case <-lost:
		err := reason()
		b.revoked.Store(true)
		b.mu.Lock()
		b.haltErr = err
		b.mu.Unlock()
		b.log.Error(fmt.Sprintf("the split-brain claim is LOST: %v: HALTING", err), "state", stHalted.String())
		b.step(evClaimRevoked, "the claim was lost after going live ("+err.Error()+")")
		b.runCancel()
	}
}

func (b *backup) status(stop chan struct{}) {
	every(stop, b.cfg.StatusEvery, func() {
		s := b.report()
		if b.live.Load() {
			b.log.Info(fmt.Sprintf("LIVE: running standalone, at exit %d", b.vm.Exits()), "state", s.State)
			return
		}
		rcv, rep := b.recv.Received(), b.replayed.Load()
		b.log.Info(fmt.Sprintf("BACKUP (replaying): at exit %d, replayed entry %d of %d received (lag %d entries)", b.lastExits.Load(), rep, rcv, int64(rcv)-int64(rep)),
			"state", s.State, "lag_entries", s.LagEntries, "lag_age", s.LagAge, "log_bytes_per_second", s.LogBytesPerSecond)
	})
}

// report delivers the backup's status now (see reporter) and returns it.
func (b *backup) report() Status { return b.rep.report(b.snapshot) }

func (b *backup) snapshot() (Status, time.Time) {
	now := time.Now()
	b.mu.Lock()
	state, why := b.pair.state, b.pair.why
	b.mu.Unlock()
	s := Status{State: state.String(), Reason: why, Generation: b.gen, LogBytes: b.logBytes.Load()}
	switch {
	case !b.joined.Load():
		// Not in the pair yet: joining, as a primary waiting for its
		// backup is.
		s.State, s.Reason = stJoining.String(), "connecting to the primary"
	case state == stReplaying:
		s.Protected = true
	case state == stDraining:
		s.Reason = "the primary was lost: replaying what was received"
	case state == stClaiming:
		s.Reason = "the primary was lost: claiming the pair"
	}
	if b.live.Load() && b.vm != nil {
		s.Exits = b.vm.Exits()
	} else {
		s.Exits = b.lastExits.Load()
	}
	if b.recv != nil {
		b.lag.added(b.recv.Received(), 0, now)
	}
	b.lag.fill(&s, now)
	s.Released = b.released.Load()
	return s, now
}
