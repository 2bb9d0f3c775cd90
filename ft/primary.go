package ft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/split"
	"github.com/ftkvm/ftkvm/vmm"
)

// The primary's protection mode.
const (
	protected   int32 = iota // output waits for the backup's ack
	unprotected              // no backup: output leaves at once, the log is dropped
	halted                   // lost the pair (or cannot tell): held output is dropped
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

// outItem is console output held until the log entry after which it was
// produced is acknowledged.
type outItem struct {
	seq  uint64 // channel seq of the Output event
	data []byte
	at   time.Time
}

type primary struct {
	cfg    Config
	log    *logger
	rec    *replay.Recorder
	sender *logchannel.Sender
	arb    split.Arbiter

	runCtx    context.Context
	runCancel context.CancelFunc
	ackCtx    context.Context
	ackCancel context.CancelFunc

	mode    atomic.Int32
	decided chan struct{} // closed when mode leaves protected
	decOnce sync.Once
	why     string // the decision, for the result

	events    atomic.Uint64 // events logged
	lastExits atomic.Uint64
	released  atomic.Uint64 // console bytes let out
	held      atomic.Int64  // console bytes waiting for an ack

	// The vCPU thread hands log entries and output to the pump goroutine
	// instead of calling the channel itself, and wakes it only through a
	// pipe: a goroutine readied by the vCPU goroutine would land in its
	// P's runnext and could sit there while the vCPU is inside KVM_RUN
	// (measured: hundreds of µs on every ack). The runtime's poller
	// delivers the pipe's readiness on another P.
	qmu      sync.Mutex
	qcond    *sync.Cond // release loop: output queued or appended
	pending  [][]byte   // marshalled events not yet appended
	pendSize int
	space    chan struct{} // closed by the pump when pending drains
	outDirty bool          // output queued since the pump last looked
	queue    []outItem
	qclosed  bool
	appended uint64          // last channel seq the pump appended
	sinkErr  error           // the pump's failure to append, reported by the sink
	lat      []time.Duration // output-commit delays, one per write

	pumpIdle     atomic.Bool
	pokeR, pokeW *os.File
}

// maxPending bounds the log the vCPU may queue ahead of the pump (the
// channel's window bounds the rest).
const maxPending = 256 << 10

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
	p := &primary{cfg: cfg, log: &logger{w: cfg.Log, role: "primary"}, decided: make(chan struct{})}
	p.qcond = sync.NewCond(&p.qmu)
	var err error
	p.rec, err = replay.NewRecorder(replay.RecorderConfig{Sink: p, Input: cfg.Input, KickAfter: cfg.KickAfter})
	if err != nil {
		return Result{}, err
	}
	epoch := time.Now()
	vc := cfg.Guest.Config
	vc.Console, vc.ConsoleInput, vc.Clock, vc.Driver, vc.TrackDirty, vc.Epoch = p, nil, p.rec.Clock(), p.rec, true, epoch
	vm, err := vmm.New(vc)
	if err != nil {
		return Result{}, err
	}
	defer vm.Close()
	if err := cfg.Guest.Load(vm); err != nil {
		return Result{}, err
	}
	hdr := cfg.Guest.Header(vm, epoch)
	hash, err := configHash(hdr)
	if err != nil {
		return Result{}, err
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
		p.log.printf("no backup connected within %v: running UNPROTECTED", waitBackup)
		p.decide(unprotected, "ran unprotected (no backup)")
	} else {
		gen := uint64(time.Now().UnixNano())
		if p.arb, err = cfg.arbiter(gen); err != nil {
			p.sender.Close()
			return Result{}, err
		}
		hb, _ := proto.Marshal(hdr)
		hl, _ := json.Marshal(hello{Header: hb, Generation: gen, Pair: cfg.Pair, Primary: cfg.Node})
		// The guest starts once the backup has the hello, so a backup
		// that was told the pair exists can always take over.
		_, err := p.sender.Append(ctx, hl)
		if err == nil {
			err = p.sender.Flush(ctx)
		}
		if err != nil {
			p.sender.Close()
			return Result{}, fmt.Errorf("sending the hello to the backup: %w", err)
		}
		p.log.printf("backup attached; pair %q generation %d; booting the guest PROTECTED (output held until the backup acks)", cfg.Pair, gen)
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
	statusStop := make(chan struct{})
	go p.status(statusStop)
	defer close(statusStop)

	res, runErr := vm.Run(p.runCtx)
	if errors.Is(runErr, context.Canceled) && p.mode.Load() == halted {
		runErr = nil
	}

	// The end of the run is logged (Stop): let the backup have all of it,
	// release what it acknowledges, then close the channel in order.
	p.pokeW.Close() // the pump drains what is pending and stops
	<-pumpDone
	if p.sender != nil && p.mode.Load() == protected {
		if err := p.sender.Flush(p.ackCtx); err != nil && p.mode.Load() == protected {
			p.log.printf("flushing the log: %v", err)
		}
	}
	p.qmu.Lock()
	p.qclosed = true
	p.qcond.Broadcast()
	p.qmu.Unlock()
	<-relDone
	close(watchStop)
	<-watchDone
	if p.sender != nil {
		p.sender.Close()
	}

	r := Result{Run: res, Released: p.released.Load()}
	p.qmu.Lock()
	r.Commit = summarize(p.lat)
	p.qmu.Unlock()
	switch p.mode.Load() {
	case protected:
		r.Outcome, r.Live = "finished protected", true
	case unprotected:
		r.Outcome, r.Live = "finished unprotected: "+p.why, true
	default:
		r.Outcome = "halted: " + p.why
		if runErr == nil {
			runErr = errors.New(r.Outcome)
		}
	}
	p.log.printf("%s after %d exits in %v; released %d console bytes; output commit delay p50 %v p99 %v over %d writes",
		r.Outcome, res.Stats.SyncExits(), res.Duration, r.Released, r.Commit.P50, r.Commit.P99, r.Commit.N)
	return r, runErr
}

// acceptBackup waits for a backup with the same VM; nil if none came.
func (p *primary) acceptBackup(ctx context.Context, l net.Listener, wait time.Duration, hash [32]byte) *logchannel.Sender {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		actx, cancel = context.WithTimeout(ctx, wait)
	}
	defer cancel()
	p.log.printf("waiting for the backup to connect on %s", l.Addr())
	conns := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			select {
			case conns <- c:
			case <-actx.Done():
				c.Close()
				close(conns)
				return
			}
		}
	}()
	defer l.Close()
	for {
		select {
		case <-actx.Done():
			return nil
		case c, ok := <-conns:
			if !ok {
				return nil
			}
			s, err := logchannel.NewSender(actx, c, p.cfg.channel(hash))
			if err != nil {
				c.Close()
				if errors.Is(err, logchannel.ErrConfigMismatch) {
					p.log.printf("REFUSED the backup at %s: %v (%v)", c.RemoteAddr(), ErrConfigMismatch, err)
				} else {
					p.log.printf("backup at %s failed the handshake: %v", c.RemoteAddr(), err)
				}
				continue
			}
			p.log.printf("backup connected from %s", c.RemoteAddr())
			return s
		}
	}
}

func (p *primary) decide(mode int32, why string) {
	p.decOnce.Do(func() {
		p.why = why
		p.mode.Store(mode)
		close(p.decided)
		p.ackCancel()
		p.qmu.Lock()
		p.qcond.Broadcast()
		p.qmu.Unlock()
	})
}

// watch handles the loss of the backup.
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
	p.log.printf("BACKUP LOST: %v; holding %d output bytes; claiming the pair on shared storage", f, p.held.Load())
	err := claim(p.arb, p.cfg.ClaimTimeout)
	switch {
	case err == nil:
		p.log.printf("WON the test-and-set (%v after detection): running UNPROTECTED from here", time.Since(detected).Round(time.Millisecond))
		p.decide(unprotected, "the backup was lost at exit "+fmt.Sprint(p.lastExits.Load()))
	case errors.Is(err, split.ErrLost):
		p.log.printf("LOST the test-and-set: %v; the backup is live: HALTING", err)
		p.decide(halted, "the backup is live ("+err.Error()+")")
		p.runCancel()
	default:
		p.log.printf("cannot reach the split-brain storage: %v; HALTING without releasing the %d held bytes (the backup may be live)", err, p.held.Load())
		p.decide(halted, "split-brain storage unreachable ("+err.Error()+")")
		p.runCancel()
	}
	p.sender.Close() // releases a vCPU waiting for window space
}

// Append is the recorder's sink, on the vCPU thread: each event goes to
// the pump, which appends it to the channel. The vCPU waits here while
// maxPending bytes are queued (the pump itself waits for window space).
func (p *primary) Append(ev *logpb.Event) error {
	p.events.Add(1)
	p.lastExits.Store(ev.Exits)
	switch p.mode.Load() {
	case halted:
		return errors.New("halted")
	case unprotected:
		return nil
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	p.qmu.Lock()
	for p.pendSize >= maxPending && p.sinkErr == nil && p.mode.Load() == protected {
		if p.space == nil {
			p.space = make(chan struct{})
		}
		ch := p.space
		p.qmu.Unlock()
		p.poke()
		select {
		case <-ch:
		case <-p.runCtx.Done():
			return p.runCtx.Err()
		}
		p.qmu.Lock()
	}
	if err := p.sinkErr; err != nil {
		p.qmu.Unlock()
		return err
	}
	p.pending = append(p.pending, b)
	p.pendSize += len(b)
	p.qmu.Unlock()
	p.poke()
	return nil
}

// poke wakes the pump if it is idle.
func (p *primary) poke() {
	if p.pumpIdle.CompareAndSwap(true, false) {
		p.pokeW.Write([]byte{0})
	}
}

// Write is the guest's console, on the vCPU thread: it logs the output and
// queues it for release.
func (p *primary) Write(b []byte) (int, error) {
	seq, err := p.rec.Output(b, p.released.Load())
	if err != nil && p.mode.Load() == protected {
		return 0, err
	}
	p.qmu.Lock()
	p.queue = append(p.queue, outItem{seq: seq + 1, data: append([]byte(nil), b...), at: time.Now()})
	p.outDirty = true
	p.qmu.Unlock()
	p.held.Add(int64(len(b)))
	p.poke()
	return len(b), nil
}

// pump appends the vCPU's events to the channel, in order, and wakes the
// release loop. It ends when pokeW is closed and everything is appended.
func (p *primary) pump() {
	buf := make([]byte, 256)
	closed := false
	for {
		p.qmu.Lock()
		batch, space, dirty := p.pending, p.space, p.outDirty
		p.pending, p.pendSize, p.space, p.outDirty = nil, 0, nil, false
		if len(batch) == 0 && !dirty {
			if closed {
				p.qmu.Unlock()
				return
			}
			p.pumpIdle.Store(true)
			p.qmu.Unlock()
			if _, err := p.pokeR.Read(buf); err != nil {
				closed = true // the run is over: one more pass
				p.pumpIdle.Store(false)
			}
			continue
		}
		p.qmu.Unlock()
		if space != nil {
			close(space)
		}
		var last uint64
		var appendErr error
		for _, e := range batch {
			if p.mode.Load() != protected || appendErr != nil {
				break
			}
			seq, err := p.sender.Append(p.runCtx, e)
			if err != nil {
				appendErr = err
				break
			}
			last = seq
		}
		p.qmu.Lock()
		if last > 0 {
			p.appended = last
		}
		if appendErr != nil && p.mode.Load() == protected && p.sinkErr == nil {
			p.sinkErr = fmt.Errorf("logging to the backup: %w", appendErr)
		}
		p.qcond.Broadcast()
		p.qmu.Unlock()
	}
}

// releaseLoop lets queued output out once the backup has acknowledged the
// log up to it (or at once when unprotected; never once halted). It waits
// for the oldest held output's entry and then releases everything the
// (cumulative) ack covers, so bytes queued meanwhile do not wait for a
// further round trip.
func (p *primary) releaseLoop() {
	for {
		p.qmu.Lock()
		for !p.qclosed && (len(p.queue) == 0 || (p.mode.Load() == protected && p.queue[0].seq > p.appended)) {
			p.qcond.Wait()
		}
		if len(p.queue) == 0 {
			p.qmu.Unlock()
			return
		}
		first := p.queue[0].seq
		p.qmu.Unlock()
		for p.mode.Load() == protected {
			err := p.sender.WaitAcked(p.ackCtx, first)
			if err == nil {
				break
			}
			if !errors.Is(err, context.Canceled) {
				p.log.printf("waiting for the backup's ack: %v: HALTING", err)
				p.decide(halted, err.Error())
				p.runCancel()
			}
			<-p.decided
		}
		mode := p.mode.Load()
		var acked uint64
		if mode == protected {
			acked = p.sender.Acked()
		}
		p.qmu.Lock()
		n := len(p.queue)
		if mode == protected {
			n = sort.Search(len(p.queue), func(i int) bool { return p.queue[i].seq > acked })
		}
		items := p.queue[:n:n]
		p.queue = p.queue[n:]
		p.qmu.Unlock()
		now := time.Now()
		var size int
		for _, it := range items {
			size += len(it.data)
		}
		p.held.Add(-int64(size))
		if mode == halted {
			continue // dropped: the backup (if live) re-sends it
		}
		out := make([]byte, 0, size)
		for _, it := range items {
			out = append(out, it.data...)
		}
		p.cfg.Output.Write(out)
		p.released.Add(uint64(size))
		p.qmu.Lock()
		for _, it := range items {
			p.lat = append(p.lat, now.Sub(it.at))
		}
		p.qmu.Unlock()
	}
}

func (p *primary) status(stop chan struct{}) {
	every(stop, p.cfg.StatusEvery, func() {
		mode := [...]string{"PROTECTED", "UNPROTECTED", "HALTED"}[p.mode.Load()]
		if p.sender != nil && p.mode.Load() == protected {
			app, ack := p.events.Load()+1, p.sender.Acked()
			p.log.printf("%s: exit %d, log %d entries sent / %d acked by the backup, output %d bytes released / %d held",
				mode, p.lastExits.Load(), app, ack, p.released.Load(), p.held.Load())
		} else {
			p.log.printf("%s: exit %d, output %d bytes released", mode, p.lastExits.Load(), p.released.Load())
		}
	})
}
