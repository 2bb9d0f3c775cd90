package ft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/split"
)

type primary struct {
	cfg    Config
	log    *slog.Logger
	rep    *reporter
	lag    lagTracker // entries the backup has not acknowledged
	gen    uint64     // the pair's generation (0: no backup came)
	rec    *replay.Recorder
	sender *logchannel.Sender
	arb    split.Arbiter

	runCtx    context.Context
	runCancel context.CancelFunc
	ackCtx    context.Context
	ackCancel context.CancelFunc

	// mode mirrors pair.protection() for the vCPU thread and the pump,
	// which read it without the lock.
	mode atomic.Int32

	events    atomic.Uint64 // events logged
	logBytes  atomic.Uint64 // bytes of the entries appended to the channel
	lastExits atomic.Uint64

	// The vCPU thread hands log entries and output to the pump goroutine
	// instead of calling the channel itself, and wakes it only through a
	// pipe: a goroutine readied by the vCPU goroutine would land in its
	// P's runnext and could sit there while the vCPU is inside KVM_RUN
	// (measured: hundreds of µs on every ack). The runtime's poller
	// delivers the pipe's readiness on another P.
	qmu      sync.Mutex
	qcond    *sync.Cond   // release loop: output queued or appended, state changed
	pair     pairCore     // the pair's state: joined, lost, claimed
	commit   outputCommit // console output held for the backup's acks
	pending  [][]byte     // marshalled events not yet appended
	pendSize int
	sinkWait time.Duration // the vCPU thread waited in Append for the pump (vCPU thread only)
	space    chan struct{} // closed by the pump when pending drains
	outDirty bool          // output queued since the pump last looked
	sinkErr  error         // the pump's failure to append, reported by the sink

	// halt is why the primary halted, for its error: the claim's error
	// (wrapping split.ErrLost or split.ErrUnreachable), or the arbiter's
	// report that the claim was lost after it ran alone. Guarded by qmu.
	halt error

	pumpIdle     atomic.Bool
	pokeR, pokeW *os.File
}

// RunPrimary runs the guest as the primary of an FT pair. It waits up to
// waitBackup for a backup to connect on l (0: wait forever; a backup
// whose VM differs is refused and the wait goes on), then runs the guest,
// logging every nondeterministic input to the backup and releasing
// console output only once the backup has acknowledged the log up to it.
// If no backup connects in time, the guest runs unprotected.
//
// When the backup is lost (silent past Config.Timeout) the primary runs
// the split-brain test-and-set: if it wins it goes on unprotected; if it
// loses (the backup went live) it halts; if the storage cannot be reached
// it halts too, without releasing output the backup has not acknowledged
// (the backup may be live and the primary cannot know: running on would
// risk two live copies).
func RunPrimary(ctx context.Context, cfg Config, l net.Listener, waitBackup time.Duration) (Result, error) {
	cfg.defaults("primary")
	if err := cfg.checkSecurity(); err != nil {
		return Result{}, err
	}
	p := &primary{cfg: cfg, log: cfg.logger("primary"), rep: newReporter("primary", &cfg), pair: newPrimaryCore()}
	p.qcond = sync.NewCond(&p.qmu)
	p.report()
	var err error
	p.rec, err = replay.NewRecorder(replay.RecorderConfig{Sink: p, Input: cfg.Input, KickAfter: cfg.KickAfter, HoldWrite: p.holdWrite})
	if err != nil {
		return Result{}, err
	}
	epoch := time.Now()
	vc, err := cfg.Guest.vmConfig(epoch, p, p.rec)
	if err != nil {
		return Result{}, err
	}
	vm, hdr, err := cfg.machine(vc)
	if err != nil {
		return Result{}, err
	}
	defer vm.Close()
	hash, err := configHash(hdr)
	if err != nil {
		return Result{}, err
	}
	if err := cfg.channel(hash).Validate(true); err != nil {
		return Result{}, fmt.Errorf("the log channel's configuration: %w", err)
	}
	p.runCtx, p.runCancel = context.WithCancel(ctx)
	defer p.runCancel()
	p.ackCtx, p.ackCancel = context.WithCancel(p.runCtx)
	defer p.ackCancel()

	p.sender = p.acceptBackup(ctx, l, waitBackup, hash)
	if p.sender == nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		p.log.Warn(fmt.Sprintf("no backup connected within %v: running UNPROTECTED", waitBackup), "state", stAlone.String(), "protected", false)
		p.step(evNoBackup, fmt.Sprintf("ran unprotected (no backup connected within %v)", waitBackup))
	} else {
		gen := uint64(time.Now().UnixNano())
		p.gen = gen
		if p.arb, err = cfg.arbiter(gen); err != nil {
			p.sender.Close()
			return Result{}, err
		}
		hb, _ := proto.Marshal(hdr)
		hl, _ := json.Marshal(hello{Header: hb, Generation: gen, Pair: cfg.Pair, Primary: cfg.Node})
		// The guest starts once the backup has the hello, so a backup
		// that was told the pair exists can always take over.
		seq, err := p.sender.Append(ctx, hl)
		p.logBytes.Add(uint64(len(hl)))
		p.lag.added(seq, uint64(len(hl)), time.Now())
		if err == nil {
			err = p.flushHello(ctx)
		}
		if err != nil {
			p.sender.Close()
			return Result{}, fmt.Errorf("sending the hello to the backup: %w", err)
		}
		p.lag.took(p.sender.Acked(), time.Now())
		p.step(evBackupJoined, "")
		p.log.Info(fmt.Sprintf("backup attached; pair %q generation %d; booting the guest PROTECTED (output held until the backup acks)", cfg.Pair, gen),
			"pair", cfg.Pair, "generation", gen, "state", stProtected.String())
	}

	if p.pokeR, p.pokeW, err = os.Pipe(); err != nil {
		if p.sender != nil {
			p.sender.Close()
		}
		return Result{}, err
	}
	defer p.pokeR.Close()
	pumpDone := make(chan struct{})
	go func() { defer close(pumpDone); p.pump() }()
	relDone := make(chan struct{})
	go func() { defer close(relDone); p.releaseLoop() }()
	watchStop, watchDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(watchDone); p.watch(watchStop) }()
	// The status goroutine ends before the run returns: no report after.
	statusStop, statusDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(statusDone); p.status(statusStop) }()
	defer func() { close(statusStop); <-statusDone }()

	res, runErr := vm.Run(p.runCtx)
	if errors.Is(runErr, context.Canceled) && p.protection() == halted {
		runErr = nil
	}

	// The end of the run is logged (Stop): let the backup have all of it,
	// release what it acknowledges, then close the channel in order.
	p.pokeW.Close() // the pump drains what is pending and stops
	<-pumpDone
	if p.sender != nil && p.protection() == protected {
		if err := p.sender.Flush(p.ackCtx); err != nil && p.protection() == protected {
			p.log.Warn(fmt.Sprintf("flushing the log: %v", err))
		}
	}
	p.qmu.Lock()
	p.commit.close()
	p.qcond.Broadcast()
	p.qmu.Unlock()
	<-relDone
	close(watchStop)
	<-watchDone
	if p.sender != nil {
		p.sender.Close()
	}

	p.qmu.Lock()
	r := Result{Run: res, Released: p.commit.released, Commit: summarize(p.commit.delays),
		CommitToChannel: summarize(p.commit.toChannel), CommitToAck: summarize(p.commit.toAck)}
	prot, why, halt := p.pair.protection(), p.pair.why, p.halt
	p.qmu.Unlock()
	switch prot {
	case protected:
		r.Outcome, r.Live = "finished protected", true
	case unprotected:
		r.Outcome, r.Live = "finished unprotected: "+why, true
	default:
		r.Outcome = "halted: " + why
		if runErr == nil {
			runErr = &haltError{r.Outcome, halt}
		}
	}
	p.report()
	p.log.Info(fmt.Sprintf("%s after %d exits in %v; released %d console bytes; output commit delay p50 %v p99 %v over %d writes (of which guest write to log channel p50 %v, channel to the backup's ack p50 %v)",
		r.Outcome, res.Stats.SyncExits(), res.Duration, r.Released, r.Commit.P50, r.Commit.P99, r.Commit.N, r.CommitToChannel.P50, r.CommitToAck.P50),
		"outcome", r.Outcome, "exits", res.Stats.SyncExits(), "released", r.Released, "commit_p50", r.Commit.P50, "commit_p99", r.Commit.P99)
	st := p.rec.Stats()
	p.log.Info(fmt.Sprintf("where the vCPU thread's %v went: running the guest %v, capturing %d landmarks %v (%v each, max %v), waiting for the log pipe %v and the log channel %v, the rest (exits, devices, logging) %v; hashing and compressing the landmarks off the vCPU thread took %v",
		res.Duration.Round(time.Millisecond), vm.RunTime().Round(time.Millisecond), st.Landmarks, st.LandmarkTime.Round(time.Millisecond),
		st.LandmarkCost().Round(time.Microsecond), st.LandmarkMax.Round(time.Microsecond), st.LogWait.Round(time.Millisecond), p.sinkWait.Round(time.Millisecond),
		(res.Duration - vm.RunTime() - st.LandmarkTime - st.LogWait - p.sinkWait).Round(time.Millisecond), st.LandmarkFinishTime.Round(time.Millisecond)))
	p.log.Info(fmt.Sprintf("deliveries: %d at synchronous exits, %d at window exits by count, %d at kicks and %d at window exits with landmarks; %.1f landmarks per second of guest run time",
		st.DeliveriesAtExits, st.DeliveriesAtWindows, st.LandmarksAtKicks, st.LandmarksAtWindows, float64(st.Landmarks)/max(vm.RunTime().Seconds(), 1e-9)),
		"at_exits", st.DeliveriesAtExits, "landmarks_at_kicks", st.LandmarksAtKicks, "landmarks_at_windows", st.LandmarksAtWindows)
	return r, runErr
}

// flushHello waits for the backup's ack of the hello, or for the channel
// to fail: a Flush alone would wait for a backup lost meanwhile for as
// long as ctx lasts. A failure that comes after the ack is left for watch.
func (p *primary) flushHello(ctx context.Context) error {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	flushed := make(chan error, 1)
	go func() { flushed <- p.sender.Flush(fctx) }()
	select {
	case err := <-flushed:
		return err
	case f := <-p.sender.Failed():
		cancel()
		<-flushed
		return f.Err
	}
}

// step feeds the pair's state machine an event and carries out the
// action it returns (claim is the caller's: only watch claims). why
// describes the event for the result.
func (p *primary) step(ev pairEvent, why string) pairAction {
	p.qmu.Lock()
	act, err := p.pair.step(ev, why)
	prot := p.pair.protection()
	p.mode.Store(int32(prot))
	p.commit.setPolicy(prot)
	p.qcond.Broadcast()
	p.qmu.Unlock()
	if err != nil {
		p.log.Error(err.Error()) // a bug, but the state is unchanged
		return actNone
	}
	p.report()
	switch act {
	case actRunAlone:
		p.ackCancel() // the release loop lets held output out
	case actHalt:
		p.ackCancel() // the release loop drops held output
		p.runCancel()
	}
	return act
}

// protection is the current output policy.
func (p *primary) protection() protection { return protection(p.mode.Load()) }

// held is the console output waiting for an ack, in bytes.
func (p *primary) held() int {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	return p.commit.heldBytes
}

// watch handles the loss of the backup: the pair's state machine says to
// claim the pair, and the claim's outcome what to do next.
func (p *primary) watch(stop chan struct{}) {
	if p.sender == nil {
		return
	}
	var f logchannel.Failure
	select {
	case <-stop:
		return
	case f = <-p.sender.Failed():
	}
	detected := time.Now()
	p.log.Warn(fmt.Sprintf("BACKUP LOST: %v; holding %d output bytes; claiming the pair on shared storage", f, p.held()),
		"held_bytes", p.held(), "last_acked", f.LastAcked, "last_appended", f.LastAppended)
	won := false
	if p.step(evPeerLost, "") == actClaim {
		switch ev, err := claim(p.arb, p.cfg.ClaimTimeout); ev {
		case evClaimWon:
			p.log.Warn(fmt.Sprintf("WON the test-and-set (%v after detection): running UNPROTECTED from here", time.Since(detected).Round(time.Millisecond)),
				"state", stAlone.String(), "protected", false)
			p.step(ev, "the backup was lost at exit "+fmt.Sprint(p.lastExits.Load()))
			won = true
		case evClaimLost:
			p.log.Error(fmt.Sprintf("LOST the test-and-set: %v; the backup is live: HALTING", err), "state", stHalted.String())
			p.haltOn(ev, "the backup is live ("+err.Error()+")", err)
		default:
			p.log.Error(fmt.Sprintf("cannot reach the split-brain storage: %v; HALTING without releasing the %d held bytes (the backup may be live)", err, p.held()), "state", stHalted.String())
			p.haltOn(ev, "split-brain storage unreachable ("+err.Error()+")", err)
		}
	}
	p.sender.Close() // releases a vCPU waiting for window space
	if won {
		p.watchClaim(stop)
	}
}

// haltOn steps the pair into halted with cause as the primary's error.
func (p *primary) haltOn(ev pairEvent, why string, cause error) {
	p.qmu.Lock()
	if p.halt == nil {
		p.halt = cause
	}
	p.qmu.Unlock()
	p.step(ev, why)
}

// watchClaim halts the primary running alone if its arbiter reports that
// the claim it won is lost (an etcd lease not renewed in time): another
// node may start the VM, so no more output may leave.
func (p *primary) watchClaim(stop chan struct{}) {
	lost, reason := claimLoss(p.arb)
	if lost == nil {
		return
	}
	select {
	case <-stop:
	case <-p.runCtx.Done():
	case <-lost:
		err := reason()
		p.log.Error(fmt.Sprintf("the split-brain claim is LOST: %v: HALTING", err), "state", stHalted.String())
		p.haltOn(evClaimRevoked, "the claim was lost while running alone ("+err.Error()+")", err)
	}
}

// Write is the guest's console, on the vCPU thread: it logs the output and
// queues it for release.
func (p *primary) Write(b []byte) (int, error) {
	p.qmu.Lock()
	released := p.commit.released // read before logging: a lower bound once logged
	p.qmu.Unlock()
	seq, err := p.rec.Output(b, released)
	if err != nil && p.protection() == protected {
		return 0, err
	}
	p.qmu.Lock()
	// Channel entry 1 is the hello: recorder event n is entry n+1.
	err = p.commit.hold(seq+1, b, time.Now())
	p.outDirty = true
	p.qmu.Unlock()
	if err != nil {
		return 0, err
	}
	p.poke()
	return len(b), nil
}

// errWriteHeld is a device write's completion when the primary halted
// before the backup acknowledged its submission: the write never left,
// and the backup, if live, performs it.
var errWriteHeld = errors.New("ft: the primary halted holding this write (the backup performs it if it went live)")

// holdWrite is the recorder's HoldWrite: output commit for device writes
// (a disk write, a transmitted frame). The write was logged as recorder
// event seq (channel entry seq+1) where the guest submitted it; the
// function it returns runs on the write's own goroutine and lets the write
// go once the backup has acknowledged that entry, at once when
// unprotected, never once halted.
func (p *primary) holdWrite(seq uint64) func() error {
	entry := seq + 1 // entry 1 is the hello
	return func() error {
		p.qmu.Lock()
		for p.pair.protection() == protected && p.commit.appended < entry && p.sinkErr == nil && p.runCtx.Err() == nil {
			p.qcond.Wait()
		}
		p.qmu.Unlock()
		for {
			switch p.protection() {
			case unprotected:
				return nil
			case halted:
				return errWriteHeld
			}
			if p.sender == nil {
				return nil
			}
			if p.sender.WaitAcked(p.ackCtx, entry) == nil {
				return nil
			}
			// The wait failed: the pair's state machine decides (it
			// cancels ackCtx when the primary runs alone or halts).
			<-p.ackCtx.Done()
			if p.protection() == protected {
				return errWriteHeld // the run ended with the write unacknowledged
			}
		}
	}
}

// releaseLoop carries out the output-commit core's decisions: it waits for
// the backup's ack of the oldest held output, then lets out everything the
// (cumulative) ack covers, so bytes queued meanwhile do not wait for a
// further round trip; everything at once when unprotected; nothing once
// halted. It ends when the queue is closed and empty.
func (p *primary) releaseLoop() {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	for {
		st := p.commit.next(time.Now())
		switch st.action {
		case commitRelease:
			p.qmu.Unlock()
			p.cfg.Output.Write(st.data)
			p.qmu.Lock()
			p.commit.written()
		case commitDrop:
			// The backup, if live, re-sends it.
		case commitWaitAck:
			p.qmu.Unlock()
			err := p.sender.WaitAcked(p.ackCtx, st.entry)
			acked := p.sender.Acked()
			p.lag.took(acked, time.Now())
			p.qmu.Lock()
			p.commit.ackedTo(acked)
			p.commit.noteAcked(acked, time.Now())
			if err != nil && p.pair.protection() == protected {
				// Not a decision's cancellation: the wait failed for good.
				p.ackFailed(err)
			}
		case commitUnlogged:
			p.ackFailed(fmt.Errorf("console output logged in entry %d never reached the log channel", st.entry))
		default:
			if p.commit.finished() {
				return
			}
			p.qcond.Wait()
		}
	}
}

// ackFailed handles a failure to get the backup's ack; called with qmu
// held.
func (p *primary) ackFailed(err error) {
	p.commit.stopAcks()
	p.qmu.Unlock()
	defer p.qmu.Lock()
	if p.step(evAckFailed, err.Error()) == actHalt {
		p.log.Error(fmt.Sprintf("waiting for the backup's ack: %v: HALTING", err), "state", stHalted.String())
	}
}
