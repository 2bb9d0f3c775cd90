package ft

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/internal/toyvm"
	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/split"
	"github.com/ftkvm/ftkvm/vmm"
)

// The tests here run the real RunPrimary and RunBackup, goroutines and
// all, over toy machines (internal/toyvm) and an in-memory network
// (logchannel.NewPipe behind a relay that can cut, hold or drop traffic),
// with the file arbiter in a temporary directory: a pair's whole life in
// milliseconds, without KVM.

// toySide is a toy machine run by the driver ft configured.
type toySide struct {
	*toyvm.Machine
	d vmm.Driver
}

func (t toySide) Run(ctx context.Context) (vmm.Result, error) { return t.Machine.Run(ctx, t.d) }

// toyGuest builds toy machines running prog; it remembers the last one it
// built with a driver, and what its backend performed.
type toyGuest struct {
	prog  []toyvm.Op
	setup func(*toyvm.Machine) // before the run, if set

	mu     sync.Mutex
	m      *toyvm.Machine
	writes []uint64 // tags of the device writes performed
	reads  int      // DMA reads performed
	// acked, if set, says at each write what the primary's release
	// says at each console write (world.acked); held records it.
	acked func() (uint64, bool)
	held  []release // upto is the write's tag
}

func (g *toyGuest) header(epoch time.Time) *logpb.Header {
	h := sha256.New()
	for _, op := range g.prog {
		binary.Write(h, binary.LittleEndian, [2]int64{int64(op.Kind), int64(op.N)})
	}
	return &logpb.Header{Version: logio.FormatVersion, MemoryBytes: toyvm.Pages * 4096, EpochUnixNano: epoch.UnixNano(),
		ImageSha256: h.Sum(nil), Recorder: "toy"}
}

func (g *toyGuest) factory(vc vmm.Config) (Machine, *logpb.Header, error) {
	m := toyvm.New(g.prog)
	hdr := g.header(vc.Epoch)
	if vc.Driver == nil {
		return toySide{Machine: m}, hdr, nil // the backup's probe
	}
	if cd, ok := vc.Driver.(vmm.ClockDriver); ok {
		m.SetClock(cd.Clock())
	} else {
		m.SetClock(vmm.NewHostClock())
	}
	m.SetBounce(bounce.NewEngine(func(req bounce.Request) ([]byte, error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if req.Write {
			g.writes = append(g.writes, req.Tag)
			if g.acked != nil {
				a, prot := g.acked()
				g.held = append(g.held, release{int(req.Tag), a, prot})
			}
			return nil, nil
		}
		g.reads++
		return bytes.Repeat([]byte{byte(req.Tag)}, req.Len), nil
	}))
	console := vc.Console
	m.SetOutput(func(_ vmm.Point, b []byte) error { _, err := console.Write(b); return err })
	m.SetSpin(20)
	if g.setup != nil {
		g.setup(m)
	}
	g.mu.Lock()
	g.m = m
	g.mu.Unlock()
	return toySide{Machine: m, d: vc.Driver}, hdr, nil
}

func (g *toyGuest) performed() []uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]uint64(nil), g.writes...)
}

// output is the console output the program writes, whole.
func output(prog []toyvm.Op) string {
	var b []byte
	for _, op := range prog {
		if op.Kind == toyvm.Out {
			b = append(b, byte(op.N))
		}
	}
	return string(b)
}

// work is what RAX ends at: the program's work iterations.
func work(prog []toyvm.Op) uint64 {
	var n uint64
	for _, op := range prog {
		if op.Kind == toyvm.Work {
			n += uint64(op.N)
		}
	}
	return n
}

// chatterProg writes lines of output among work, TSC and clock reads and
// device writes (tags from 1), with no timer: its end state depends only
// on its inputs, which the log carries.
func chatterProg(lines int) []toyvm.Op {
	var p []toyvm.Op
	for i := range lines {
		p = append(p, toyvm.Op{Kind: toyvm.Work, N: 300}, toyvm.Op{Kind: toyvm.TSC}, toyvm.Op{Kind: toyvm.Clock})
		for _, c := range fmt.Sprintf("line %d\n", i) {
			p = append(p, toyvm.Op{Kind: toyvm.Out, N: int(c)})
		}
		if i%5 == 0 {
			p = append(p, toyvm.Op{Kind: toyvm.Store, N: i + 1})
		}
	}
	return append(p, toyvm.Op{Kind: toyvm.End, N: 3})
}

// relay is the network between the two sides: two pipes and a goroutine
// each way. It can cut both directions (a partition: bytes vanish), hold
// or drop the backup's direction (acks and heartbeats), and close the
// backup's end (the primary's host died and its connection reset). It
// parses the frames the backup sends (PROTOCOL.md) to know the highest
// ack the primary can have seen.
type relay struct {
	pConn, bConn net.Conn // the sides' ends
	pEnd, bEnd   net.Conn // the relay's

	mu       sync.Mutex
	cond     *sync.Cond
	cut      bool
	holdAcks bool
	dropAcks bool
	maxAck   uint64
}

func newRelay() *relay {
	r := &relay{}
	r.cond = sync.NewCond(&r.mu)
	r.pConn, r.pEnd = logchannel.NewPipe(0)
	r.bConn, r.bEnd = logchannel.NewPipe(0)
	go r.forward()
	go r.backward()
	return r
}

func (r *relay) set(f func(r *relay)) {
	r.mu.Lock()
	f(r)
	r.cond.Broadcast()
	r.mu.Unlock()
}

// forward carries the primary's bytes to the backup.
func (r *relay) forward() {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.pEnd.Read(buf)
		r.mu.Lock()
		cut := r.cut
		r.mu.Unlock()
		if n > 0 && !cut {
			if _, werr := r.bEnd.Write(buf[:n]); werr != nil {
				r.pEnd.Close()
				return
			}
		}
		if err != nil {
			if !cut {
				r.bEnd.Close()
			}
			return
		}
	}
}

// backward carries the backup's frames to the primary, one at a time.
func (r *relay) backward() {
	for {
		hdr := make([]byte, 32)
		if _, err := io.ReadFull(r.bEnd, hdr); err != nil {
			r.mu.Lock()
			if !r.cut {
				r.pEnd.Close()
			}
			r.mu.Unlock()
			return
		}
		frame := append(hdr, make([]byte, binary.LittleEndian.Uint32(hdr[4:8]))...)
		if _, err := io.ReadFull(r.bEnd, frame[32:]); err != nil {
			r.pEnd.Close()
			return
		}
		r.mu.Lock()
		for r.holdAcks && !r.cut {
			r.cond.Wait()
		}
		drop := r.cut || r.dropAcks
		if typ := hdr[2]; !drop && (typ == 5 || typ == 6) {
			r.maxAck = max(r.maxAck, binary.LittleEndian.Uint64(hdr[16:24]))
		}
		r.mu.Unlock()
		if !drop {
			if _, err := r.pEnd.Write(frame); err != nil {
				return
			}
		}
	}
}

func (r *relay) acked() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxAck
}

// pipeListener hands the primary the connections dialled to it.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// dial connects to the listener; the connection goes through a new relay.
func (l *pipeListener) dial(got func(*relay)) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		r := newRelay()
		select {
		case l.conns <- r.pConn:
		case <-l.closed:
			return nil, errors.New("connection refused")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if got != nil {
			got(r)
		}
		return r.bConn, nil
	}
}

// world is what the outside sees of one side's console: the bytes it let
// out and, for the primary, the highest ack it could have seen at each
// release.
type world struct {
	mu       sync.Mutex
	b        bytes.Buffer
	dead     bool // the host died: nothing more leaves it
	releases []release
	acked    func() (uint64, bool) // highest ack seen, and whether protected
}

type release struct {
	upto      int    // bytes out after this write
	acked     uint64 // highest ack the primary could have seen
	protected bool
}

func (w *world) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead {
		return len(p), nil
	}
	w.b.Write(p)
	if w.acked != nil {
		a, prot := w.acked()
		w.releases = append(w.releases, release{w.b.Len(), a, prot})
	}
	return len(p), nil
}

func (w *world) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// pair is one test's pair: both sides' configuration and what they did.
type pair struct {
	t        *testing.T
	prog     []toyvm.Op
	pg, bg   *toyGuest
	pOut     *world
	bOut     *world
	log      *syncBuf
	l        *pipeListener
	relay    atomic.Pointer[relay]
	runLog   bytes.Buffer
	pDead    atomic.Bool
	pAlone   atomic.Bool // the primary won a claim: it releases without acks
	bWon     atomic.Bool
	pCtx     context.Context
	pKill    context.CancelFunc
	pCfg     Config
	bCfg     Config
	pRes     Result
	pErr     error
	bRes     Result
	bErr     error
	liveAt   vmm.Point
	exitFP   sync.Map // exit → fingerprint after it, on the primary
	replayFP sync.Map // the same on the backup, until it goes live
	bLive    bool     // the backup went live (its vCPU thread only)
	splitDir string
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// arbiter is the file arbiter, unreachable once its host died.
type arbiter struct {
	split.Arbiter
	dead *atomic.Bool
	won  *atomic.Bool
}

func (a arbiter) TestAndSet(ctx context.Context) error {
	if a.dead != nil && a.dead.Load() {
		<-ctx.Done()
		return fmt.Errorf("%w: the host is dead", split.ErrUnreachable)
	}
	err := a.Arbiter.TestAndSet(ctx)
	if err == nil && a.won != nil {
		a.won.Store(true)
	}
	return err
}

func newPair(t *testing.T, prog []toyvm.Op) *pair {
	p := &pair{t: t, prog: prog, pg: &toyGuest{prog: prog}, bg: &toyGuest{prog: prog}, log: &syncBuf{}, l: newPipeListener(), splitDir: t.TempDir()}
	p.pOut = &world{}
	p.bOut = &world{}
	p.pOut.acked = func() (uint64, bool) {
		r := p.relay.Load()
		if r == nil {
			return 0, !p.pAlone.Load()
		}
		return r.acked(), !p.pAlone.Load()
	}
	base := Config{Insecure: true, SplitDir: p.splitDir, Pair: "toy", Timeout: 300 * time.Millisecond, Heartbeat: 30 * time.Millisecond,
		ClaimTimeout: 3 * time.Second, StatusEvery: -1, Log: p.log, KickAfter: 50 * time.Microsecond}
	p.pg.acked = p.pOut.acked
	p.pCfg, p.bCfg = base, base
	p.pCfg.Node, p.bCfg.Node = "primary", "backup"
	p.pCfg.NewMachine, p.bCfg.NewMachine = p.pg.factory, p.bg.factory
	p.pCfg.Output, p.bCfg.Output = p.pOut, p.bOut
	p.pCfg.NewArbiter = func(gen uint64) (split.Arbiter, error) {
		a, err := split.NewFileArbiter(split.FileConfig{Dir: p.splitDir, Pair: "toy", Node: "primary", Generation: gen})
		return arbiter{a, &p.pDead, &p.pAlone}, err
	}
	p.bCfg.NewArbiter = func(gen uint64) (split.Arbiter, error) {
		a, err := split.NewFileArbiter(split.FileConfig{Dir: p.splitDir, Pair: "toy", Node: "backup", Generation: gen})
		return arbiter{a, nil, &p.bWon}, err
	}
	p.bCfg.Dial = p.l.dial(func(r *relay) { p.relay.Store(r) })
	p.bCfg.RunLog = &p.runLog
	p.bCfg.OnLive = func() {
		p.bg.mu.Lock()
		m := p.bg.m
		p.bg.mu.Unlock()
		p.liveAt = m.Point()
		p.bLive = true
	}
	p.bg.setup = func(m *toyvm.Machine) {
		m.OnExit(func(m *toyvm.Machine) {
			if !p.bLive {
				fp, _ := m.Fingerprint()
				p.replayFP.Store(m.Point().Exits, fp)
			}
		})
	}
	p.pg.setup = func(m *toyvm.Machine) {
		m.OnExit(func(m *toyvm.Machine) {
			fp, _ := m.Fingerprint()
			p.exitFP.Store(m.Point().Exits, fp)
		})
	}
	p.pCtx, p.pKill = context.WithCancel(context.Background())
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.log.String())
		}
	})
	return p
}

// onPrimaryExit runs f on the primary's vCPU thread after exit n.
func (p *pair) onPrimaryExit(n uint64, f func()) {
	p.pg.setup = func(m *toyvm.Machine) {
		m.OnExit(func(m *toyvm.Machine) {
			fp, _ := m.Fingerprint()
			p.exitFP.Store(m.Point().Exits, fp)
			if m.Point().Exits == n {
				f()
			}
		})
	}
}

// run runs both sides to their end.
func (p *pair) run() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pctx, c := context.WithTimeout(p.pCtx, 20*time.Second)
		defer c()
		p.pRes, p.pErr = RunPrimary(pctx, p.pCfg, p.l, 5*time.Second)
	}()
	go func() {
		defer wg.Done()
		p.bRes, p.bErr = RunBackup(ctx, p.bCfg, "primary", 5*time.Second)
	}()
	wg.Wait()
	p.t.Logf("primary: %s (%v); backup: %s (%v)", p.pRes.Outcome, p.pErr, p.bRes.Outcome, p.bErr)
}

// kill is the primary's host dying: nothing more leaves it, its storage
// is gone, its connection is reset, its vCPU stops.
func (p *pair) kill() { p.die(true) }

// die is the primary's host dying; reset says whether its connection is
// reset (a process killed) or goes silent (a host powered off).
func (p *pair) die(reset bool) {
	p.pOut.mu.Lock()
	p.pOut.dead = true
	p.pOut.mu.Unlock()
	p.pDead.Store(true)
	r := p.relay.Load()
	r.set(func(r *relay) { r.cut = true })
	if reset {
		r.bEnd.Close()
	}
	p.pKill()
}

// checkWorld checks what the outside saw: the program's whole output,
// the primary's part a prefix and the backup's re-sent part overlapping
// it at most; and that the primary let out no byte before the backup had
// acknowledged the entry logging it (from the backup's log of the run).
func (p *pair) checkWorld() {
	t := p.t
	t.Helper()
	want := output(p.prog)
	po, bo := p.pOut.String(), p.bOut.String()
	if len(want) < len(po) || want[:len(po)] != po {
		t.Fatalf("the primary let out %q, not a prefix of the program's output %q", po, want)
	}
	from := len(want) - len(bo)
	if from < 0 || want[from:] != bo || from > len(po) {
		t.Fatalf("primary let out %d bytes, backup %q: not the rest of %q (a gap or garbage)", len(po), bo, want)
	}
	// Entry of each output byte, from the log the backup replayed.
	r, err := logio.NewReader(bytes.NewReader(p.runLog.Bytes()))
	if err != nil {
		t.Fatalf("the backup's run log: %v", err)
	}
	var entryOf []uint64
	submitted := map[uint64]uint64{} // device write tag → its Submit's entry
	for {
		ev, err := r.Next()
		if err != nil || ev.GetHandover() != nil {
			break
		}
		if o := ev.GetOutput(); o != nil {
			for range o.Data {
				entryOf = append(entryOf, ev.Seq+1)
			}
		}
		if sub := ev.GetSubmit(); sub != nil {
			submitted[sub.Tag] = ev.Seq + 1
		}
	}
	p.pg.mu.Lock()
	for _, w := range p.pg.held {
		if e, ok := submitted[uint64(w.upto)]; w.protected && (!ok || e > w.acked) {
			t.Errorf("the primary performed device write %d (log entry %d, logged %v) when the backup had acknowledged entry %d", w.upto, e, ok, w.acked)
		}
	}
	p.pg.mu.Unlock()
	p.pOut.mu.Lock()
	defer p.pOut.mu.Unlock()
	for _, rel := range p.pOut.releases {
		if !rel.protected {
			continue
		}
		if rel.upto > len(entryOf) {
			t.Fatalf("the primary let out %d bytes while protected; the backup's log has %d", rel.upto, len(entryOf))
		}
		if e := entryOf[rel.upto-1]; e > rel.acked {
			t.Fatalf("the primary let out byte %d (log entry %d) when the backup had acknowledged entry %d", rel.upto-1, e, rel.acked)
		}
	}
}

func TestSessionProtectedRun(t *testing.T) {
	p := newPair(t, chatterProg(40))
	p.run()
	if p.pErr != nil || p.bErr != nil || p.pRes.Outcome != "finished protected" || !p.pRes.Live || p.bRes.Live {
		t.Fatalf("primary %q %v, backup %q %v", p.pRes.Outcome, p.pErr, p.bRes.Outcome, p.bErr)
	}
	if p.pRes.Run.Reason != vmm.StopExitPort || p.pRes.Run.Status != 3 || p.bRes.Run != p.pRes.Run {
		t.Errorf("runs ended %+v (primary) and %+v (backup)", p.pRes.Run, p.bRes.Run)
	}
	if p.bOut.String() != "" || p.pOut.String() != output(p.prog) || p.pRes.Released != uint64(len(output(p.prog))) {
		t.Errorf("primary let out %d bytes (%d counted), backup %q", len(p.pOut.String()), p.pRes.Released, p.bOut.String())
	}
	p.checkWorld()
	for end := time.Now().Add(2 * time.Second); len(p.pg.performed()) < 8 && time.Now().Before(end); {
		time.Sleep(time.Millisecond) // the last ones run on their own goroutines
	}
	if got := p.pg.performed(); len(got) != 8 {
		t.Errorf("the primary performed device writes %v, want 8", got)
	}
	if got := p.bg.performed(); len(got) != 0 {
		t.Errorf("the backup performed device writes %v while replaying", got)
	}
	if !bytes.Equal(fp(t, p.pg), fp(t, p.bg)) {
		t.Error("the two sides ended in different states")
	}
}

func fp(t *testing.T, g *toyGuest) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, _ := g.m.Fingerprint()
	return f[:]
}

// owner is who won the pair's claim: exactly one side may.
func (p *pair) owner() string {
	switch pw, bw := p.pAlone.Load(), p.bWon.Load(); {
	case pw && bw:
		p.t.Fatal("both sides won the test-and-set")
	case pw:
		return "primary"
	case bw:
		return "backup"
	}
	return ""
}

// The primary's host dies in the middle of the run (its connection reset,
// or silent): the backup replays
// what it received, wins the claim, re-sends the output the primary may
// not have let out, and runs the guest to its end. At the handover its
// state is the primary's at that exit.
func TestSessionPrimaryKilled(t *testing.T) {
	for i, at := range []uint64{3, 40, 150, 350, 90} {
		reset := i < 4
		t.Run(fmt.Sprintf("exit%d-reset-%v", at, reset), func(t *testing.T) {
			p := newPair(t, chatterProg(40))
			p.onPrimaryExit(at, func() { p.die(reset) })
			p.run()
			if !p.bRes.Live || p.bErr != nil || p.pErr == nil { // the dead primary's own result does not matter
				t.Fatalf("primary %q %v, backup %q %v: want the backup live", p.pRes.Outcome, p.pErr, p.bRes.Outcome, p.bErr)
			}
			if p.bRes.Run.Reason != vmm.StopExitPort || p.bRes.Run.Status != 3 {
				t.Errorf("the backup's run ended %+v", p.bRes.Run)
			}
			p.checkWorld()
			if o := p.owner(); o != "backup" {
				t.Errorf("the claim is held by %q", o)
			}
			if p.liveAt.Exits > at {
				t.Errorf("went live at %v, past the primary's death at exit %d", p.liveAt, at)
			}
			// Up to the handover the backup's state after each exit is
			// the primary's. (At the handover's own exit it may not be:
			// a read the primary logged there may not have arrived.)
			compared := 0
			p.replayFP.Range(func(k, v any) bool {
				if k.(uint64) >= p.liveAt.Exits {
					return true
				}
				compared++
				if want, ok := p.exitFP.Load(k); !ok || want != v {
					t.Errorf("after exit %d the replaying backup's state is not the primary's", k)
				}
				return true
			})
			t.Logf("live at %v; states after %d exits compared", p.liveAt, compared)
			if p.liveAt.Exits > 0 && uint64(compared)+1 != p.liveAt.Exits {
				t.Errorf("compared the states after %d exits, went live at %v", compared, p.liveAt)
			}
			p.bg.mu.Lock()
			regs, _ := p.bg.m.Regs()
			p.bg.mu.Unlock()
			if regs.RAX != work(p.prog) {
				t.Errorf("the guest ended with %d work iterations, want %d", regs.RAX, work(p.prog))
			}
			// Every device write happens on one side or the other (some
			// on their own goroutines after the run).
			done := map[uint64]bool{}
			for end := time.Now().Add(2 * time.Second); len(done) < 8 && time.Now().Before(end); time.Sleep(time.Millisecond) {
				for _, tag := range append(p.pg.performed(), p.bg.performed()...) {
					done[tag] = true
				}
			}
			if len(done) != 8 {
				t.Errorf("device writes performed: %v, want 8", done)
			}
		})
	}
}

// A partition in the middle of the run: both sides lose each other, both
// claim the pair, exactly one wins and runs on; the outside sees the
// output once, with at most an overlap.
func TestSessionPartition(t *testing.T) {
	wins := map[string]int{}
	for i := range 6 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, chatterProg(30))
			p.onPrimaryExit(uint64(20+i*37), func() {
				p.relay.Load().set(func(r *relay) { r.cut = true })
			})
			p.run()
			if p.pRes.Live == p.bRes.Live {
				t.Fatalf("primary %q (live %v), backup %q (live %v): want exactly one live", p.pRes.Outcome, p.pRes.Live, p.bRes.Outcome, p.bRes.Live)
			}
			winner := "primary"
			if p.bRes.Live {
				winner = "backup"
			}
			if o := p.owner(); o != winner {
				t.Errorf("%s is live, the claim is held by %q", winner, o)
			}
			wins[winner]++
			p.checkWorld()
		})
	}
	t.Logf("wins: %v", wins)
}

// The backup's acks and heartbeats stop reaching the primary while the
// log still reaches the backup: the primary declares the backup lost and
// gives up the channel, which the backup sees end. Both claim the pair;
// exactly one runs on, and the outside sees the output once.
func TestSessionAckLoss(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := newPair(t, chatterProg(30))
			p.onPrimaryExit(uint64(30+i*50), func() {
				p.relay.Load().set(func(r *relay) { r.dropAcks = true })
			})
			p.run()
			if p.pRes.Live == p.bRes.Live {
				t.Fatalf("primary %q (live %v), backup %q (live %v): want exactly one live", p.pRes.Outcome, p.pRes.Live, p.bRes.Outcome, p.bRes.Live)
			}
			if w := p.owner(); p.pRes.Live != (w == "primary") {
				t.Errorf("the claim went to %q; primary live %v", w, p.pRes.Live)
			}
			p.checkWorld()
		})
	}
}

// Acks held back (shorter than the timeout): the primary's output waits
// for them and nothing leaves before its ack; the run ends protected.
func TestSessionAckDelay(t *testing.T) {
	p := newPair(t, chatterProg(30))
	p.pCfg.Timeout, p.bCfg.Timeout = 2*time.Second, 2*time.Second
	var before int
	p.onPrimaryExit(60, func() {
		r := p.relay.Load()
		r.set(func(r *relay) { r.holdAcks = true })
		before = len(p.pOut.String())
		go func() {
			time.Sleep(100 * time.Millisecond)
			r.set(func(r *relay) { r.holdAcks = false })
		}()
	})
	p.run()
	if p.pRes.Outcome != "finished protected" || p.bErr != nil {
		t.Fatalf("primary %q %v, backup %q %v", p.pRes.Outcome, p.pErr, p.bRes.Outcome, p.bErr)
	}
	if p.pRes.Commit.Max < 50*time.Millisecond {
		t.Errorf("output commit delay at most %v while acks were held 100 ms (%d bytes out then)", p.pRes.Commit.Max, before)
	}
	p.checkWorld()
}

// A primary nobody joins runs unprotected once its wait is over, and
// lets its output out at once; a backup built for another guest is
// refused in the handshake, and the primary goes on waiting.
func TestSessionNoBackup(t *testing.T) {
	p := newPair(t, chatterProg(5))
	other := &toyGuest{prog: chatterProg(6)}
	p.bCfg.NewMachine = other.factory
	bErr := make(chan error, 1)
	go func() {
		_, err := RunBackup(context.Background(), p.bCfg, "primary", time.Second)
		bErr <- err
	}()
	res, err := RunPrimary(context.Background(), p.pCfg, p.l, 300*time.Millisecond)
	if err != nil || !res.Live || !strings.HasPrefix(res.Outcome, "finished unprotected") {
		t.Fatalf("primary %q %v", res.Outcome, err)
	}
	if p.pOut.String() != output(p.prog) {
		t.Errorf("the primary let out %q", p.pOut.String())
	}
	if err := <-bErr; !errors.Is(err, ErrConfigMismatch) {
		t.Errorf("the other guest's backup: %v, want ErrConfigMismatch", err)
	}
	if !strings.Contains(p.log.String(), "REFUSED the backup") {
		t.Error("the primary did not log the refusal")
	}
}

// The status lines of both sides, while a pair runs.
func TestSessionStatus(t *testing.T) {
	p := newPair(t, chatterProg(30))
	p.pCfg.StatusEvery, p.bCfg.StatusEvery = time.Millisecond, time.Millisecond
	p.pCfg.Timeout, p.bCfg.Timeout = 2*time.Second, 2*time.Second
	p.onPrimaryExit(60, func() {
		r := p.relay.Load()
		r.set(func(r *relay) { r.holdAcks = true })
		time.AfterFunc(150*time.Millisecond, func() { r.set(func(r *relay) { r.holdAcks = false }) })
	})
	p.run()
	for _, want := range []string{"PROTECTED: exit", "BACKUP (replaying): at exit"} {
		if !strings.Contains(p.log.String(), want) {
			t.Errorf("no %q status line", want)
		}
	}
}
