package ft

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/toyvm"
	"github.com/ftkvm/ftkvm/split"
)

// statusLog records the states a side reported through OnStatus, in
// order, without repeats, and the largest lag it reported.
type statusLog struct {
	mu     sync.Mutex
	states []string
	all    []Status
}

func (l *statusLog) hear(s Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.states); n == 0 || l.states[n-1] != s.State {
		l.states = append(l.states, s.State)
	}
	l.all = append(l.all, s)
}

func (l *statusLog) get() ([]string, []Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states), slices.Clone(l.all)
}

// subsequence reports whether want appears in got in order.
func subsequence(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// Across a failover the sides report what they are: the primary joining
// then protected, the backup replaying, then claiming the pair, then
// live; the Monitors end on the last report, with the figures filled in.
func TestSessionStatusAcrossFailover(t *testing.T) {
	p := newPair(t, chatterProg(40))
	var pl, bl statusLog
	var pm, bm Monitor
	p.pCfg.OnStatus, p.bCfg.OnStatus = pl.hear, bl.hear
	p.pCfg.Monitor, p.bCfg.Monitor = &pm, &bm
	p.pCfg.StatusEvery, p.bCfg.StatusEvery = 2*time.Millisecond, 2*time.Millisecond
	if _, ok := pm.Status(); ok {
		t.Fatal("a Monitor has a status before its side started")
	}
	p.onPrimaryExit(150, func() { p.die(true) })
	p.run()
	if !p.bRes.Live {
		t.Fatalf("backup %q %v: want it live", p.bRes.Outcome, p.bErr)
	}
	ps, pall := pl.get()
	bs, _ := bl.get()
	t.Logf("primary %v; backup %v", ps, bs)
	if !subsequence(ps, []string{"joining", "protected"}) {
		t.Errorf("the primary reported %v", ps)
	}
	if !subsequence(bs, []string{"replaying", "claiming", "live"}) || bs[len(bs)-1] != "live" {
		t.Errorf("the backup reported %v", bs)
	}
	protected := false
	for _, s := range pall {
		if s.State == "protected" {
			protected = protected || (s.Protected && s.Generation != 0 && s.LogEntries > 0 && s.LogBytes > 0 && s.Role == "primary")
		}
	}
	if !protected {
		t.Error("no report of the protected primary with its generation and log")
	}
	b, ok := bm.Status()
	pp, _ := pm.Status()
	if !ok || b.State != "live" || b.Protected || b.Role != "backup" || b.Generation != pp.Generation || b.Exits == 0 ||
		b.LogEntries == 0 || b.Released != p.bRes.Released || !b.Final() || b.Since.IsZero() {
		t.Errorf("the backup's last status %+v (primary's generation %d, released %d)", b, pp.Generation, p.bRes.Released)
	}
}

// A primary nobody joins says so: state alone, not protected, and why;
// its log says it at warning level.
func TestSessionStatusAlone(t *testing.T) {
	p := newPair(t, chatterProg(5))
	var pl statusLog
	var pm Monitor
	p.pCfg.OnStatus, p.pCfg.Monitor = pl.hear, &pm
	res, err := RunPrimary(context.Background(), p.pCfg, p.l, 50*time.Millisecond)
	if err != nil || !res.Live {
		t.Fatalf("primary %q %v", res.Outcome, err)
	}
	states, _ := pl.get()
	s, _ := pm.Status()
	if !slices.Equal(states, []string{"joining", "alone"}) || s.State != "alone" || s.Protected || !strings.Contains(s.Reason, "no backup") ||
		s.Released != uint64(len(output(p.prog))) || !s.Final() {
		t.Errorf("states %v; last status %+v", states, s)
	}
	if !strings.Contains(p.log.String(), `level=WARN msg="no backup connected within 50ms: running UNPROTECTED"`) {
		t.Errorf("the log does not warn of running unprotected:\n%s", p.log.String())
	}
}

// Acks held back: the primary's reports show the lag growing (entries,
// bytes, the age of the oldest) and the last ack ageing, and the commit
// delay percentiles come from the released output.
func TestSessionStatusLag(t *testing.T) {
	p := newPair(t, chatterProg(30))
	var pl statusLog
	p.pCfg.OnStatus = pl.hear
	p.pCfg.StatusEvery = 2 * time.Millisecond
	p.pCfg.Timeout, p.bCfg.Timeout = 2*time.Second, 2*time.Second
	p.onPrimaryExit(60, func() {
		r := p.relay.Load()
		r.set(func(r *relay) { r.holdAcks = true })
		time.AfterFunc(150*time.Millisecond, func() { r.set(func(r *relay) { r.holdAcks = false }) })
	})
	p.run()
	if p.pRes.Outcome != "finished protected" {
		t.Fatalf("primary %q %v", p.pRes.Outcome, p.pErr)
	}
	_, all := pl.get()
	var lagged Status
	bw := 0.0
	for _, s := range all {
		if s.LagAge > lagged.LagAge {
			lagged = s
		}
		bw = max(bw, s.LogBytesPerSecond)
	}
	if bw == 0 {
		t.Error("no report of the log's bandwidth")
	}
	if lagged.LagAge < 50*time.Millisecond || lagged.LagEntries == 0 || lagged.LagBytes == 0 || lagged.LastAckAge < 50*time.Millisecond {
		t.Errorf("the most lagged report %+v: want the held acks' lag", lagged)
	}
	last := all[len(all)-1]
	if last.LagEntries != 0 || last.CommitP99 < 50*time.Millisecond || last.CommitP50 == 0 || last.CommitP50 > last.CommitP99 ||
		last.Released != p.pRes.Released {
		t.Errorf("the last report %+v", last)
	}
}

// revocable is a split.Arbiter that can lose a claim it won, as the etcd
// arbiter does when its lease is not renewed: a test double of the
// interface (the etcd arbiter itself is tested against etcd in split).
type revocable struct {
	split.Arbiter
	delay       time.Duration // before each test-and-set
	revokeOnWin bool          // report the claim lost as soon as it is won
	lost        chan struct{}
	once        sync.Once
}

func newRevocable(a split.Arbiter) *revocable {
	return &revocable{Arbiter: a, lost: make(chan struct{})}
}

func (a *revocable) TestAndSet(ctx context.Context) error {
	time.Sleep(a.delay)
	err := a.Arbiter.TestAndSet(ctx)
	if err == nil && a.revokeOnWin {
		a.revoke()
	}
	return err
}

func (a *revocable) revoke()               { a.once.Do(func() { close(a.lost) }) }
func (a *revocable) Lost() <-chan struct{} { return a.lost }
func (a *revocable) LostReason() error     { return a.reason() }
func (a *revocable) reason() error {
	select {
	case <-a.lost:
		return split.ErrLeaseExpired
	default:
		return nil
	}
}

// A live backup whose arbiter reports the claim lost halts: its guest
// stops, its console lets nothing more out, its error wraps split.ErrLost
// and its status says halted.
func TestSessionLiveBackupHaltsOnLostClaim(t *testing.T) {
	p := newPair(t, chatterProg(40))
	var bm Monitor
	p.bCfg.Monitor = &bm
	var arb *revocable
	mk := p.bCfg.NewArbiter
	p.bCfg.NewArbiter = func(gen uint64) (split.Arbiter, error) {
		a, err := mk(gen)
		arb = newRevocable(a)
		return arb, err
	}
	onLive := p.bCfg.OnLive
	var sentAtLive int
	p.bCfg.OnLive = func() {
		onLive()
		sentAtLive = len(p.bOut.String())
		arb.revoke()
		// Hold the vCPU until the side has halted, so that nothing the
		// guest writes from here can leave.
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
			if s, _ := bm.Status(); s.State == "halted" {
				return
			}
		}
	}
	p.onPrimaryExit(40, func() { p.die(true) })
	p.run()
	if p.bRes.Live || !errors.Is(p.bErr, split.ErrLost) || !strings.HasPrefix(p.bRes.Outcome, "halted: the claim was lost after going live") {
		t.Fatalf("backup %q (live %v) %v: want halted on the lost claim", p.bRes.Outcome, p.bRes.Live, p.bErr)
	}
	if got := len(p.bOut.String()); got != sentAtLive {
		t.Errorf("the backup let out %d bytes after its claim was lost", got-sentAtLive)
	}
	if len(p.pOut.String())+len(p.bOut.String()) >= len(output(p.prog)) {
		t.Errorf("the guest ran to its end (%d + %d bytes out) after the claim was lost", len(p.pOut.String()), len(p.bOut.String()))
	}
	if s, _ := bm.Status(); s.State != "halted" || s.Protected || !strings.Contains(s.Reason, "lease expired") {
		t.Errorf("the backup's status %+v", s)
	}
	if !strings.Contains(p.log.String(), "the split-brain claim is LOST") {
		t.Error("the backup did not log the loss")
	}
}

// A primary that won the claim and runs alone halts when its arbiter
// reports the claim lost: no more output leaves, and its error wraps
// split.ErrLost. A primary that loses the test-and-set outright also
// returns an error wrapping split.ErrLost.
func TestSessionPrimaryClaimLost(t *testing.T) {
	t.Run("revoked while alone", func(t *testing.T) {
		p := newPair(t, chatterProg(60))
		var pm Monitor
		p.pCfg.Monitor = &pm
		mk, mkb := p.pCfg.NewArbiter, p.bCfg.NewArbiter
		p.pCfg.NewArbiter = func(gen uint64) (split.Arbiter, error) {
			a, err := mk(gen)
			r := newRevocable(a)
			r.revokeOnWin = true
			return r, err
		}
		p.bCfg.NewArbiter = func(gen uint64) (split.Arbiter, error) {
			a, err := mkb(gen)
			r := newRevocable(a)
			r.delay = 500 * time.Millisecond // the primary claims first
			return r, err
		}
		var outAtHalt int
		p.pg.setup = func(m *toyvm.Machine) {
			m.OnExit(func(m *toyvm.Machine) {
				switch m.Point().Exits {
				case 30:
					p.relay.Load().set(func(r *relay) { r.cut = true })
				case 31:
					// Hold the vCPU until the side has halted: the guest
					// is still running when the claim is lost.
					for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
						if s, _ := pm.Status(); s.State == "halted" {
							// A batch the release loop began while alone
							// may still be on its way out.
							time.Sleep(20 * time.Millisecond)
							outAtHalt = len(p.pOut.String())
							return
						}
					}
				}
			})
		}
		p.run()
		if got := len(p.pOut.String()); got != outAtHalt {
			t.Errorf("the primary let out %d bytes after it halted", got-outAtHalt)
		}
		if p.pRes.Live || !errors.Is(p.pErr, split.ErrLost) || !strings.Contains(p.pRes.Outcome, "the claim was lost while running alone") {
			t.Fatalf("primary %q %v: want halted on the lost claim", p.pRes.Outcome, p.pErr)
		}
		if len(p.pOut.String()) >= len(output(p.prog)) {
			t.Errorf("the primary let out all %d bytes after its claim was lost", len(p.pOut.String()))
		}
		if s, _ := pm.Status(); s.State != "halted" || s.Protected || s.LagEntries != 0 || s.LagAge != 0 {
			t.Errorf("the primary's status %+v", s)
		}
	})
	t.Run("lost the test-and-set", func(t *testing.T) {
		p := newPair(t, chatterProg(30))
		mk := p.pCfg.NewArbiter
		p.pCfg.NewArbiter = func(gen uint64) (split.Arbiter, error) {
			a, err := mk(gen)
			r := newRevocable(a)
			r.delay = 500 * time.Millisecond // the backup claims first
			return r, err
		}
		p.onPrimaryExit(30, func() { p.relay.Load().set(func(r *relay) { r.cut = true }) })
		p.run()
		if !p.bRes.Live || p.pRes.Live || !errors.Is(p.pErr, split.ErrLost) || !strings.Contains(p.pErr.Error(), "the backup is live") {
			t.Fatalf("primary %q %v, backup %q: want the primary halted with split.ErrLost", p.pRes.Outcome, p.pErr, p.bRes.Outcome)
		}
	})
}

// The log records keep the words scripts and the end-to-end tests look
// for (e2e, internal/fttest, cmd/bench-twohost), with a level and fields,
// in the text handler Config.Log gets.
func TestSessionLogRecords(t *testing.T) {
	p := newPair(t, chatterProg(40))
	p.onPrimaryExit(150, func() { p.die(false) }) // silent: the timeout's words
	p.run()
	if !p.bRes.Live {
		t.Fatalf("backup %q %v: want it live", p.bRes.Outcome, p.bErr)
	}
	log := p.log.String()
	for _, want := range []string{
		`level=INFO msg="backup attached; pair \"toy\" generation `,
		"booting the guest PROTECTED",
		`level=WARN msg="PRIMARY LOST: `,
		"nothing from the sender for ",
		"role=backup state=draining",
		"WON the test-and-set",
		"LIVE at exit ",
	} {
		if fttest.Line(log, want) == "" {
			t.Errorf("no record with %q", want)
		}
	}
	// The failover's junction is read from the record as the e2e tests do.
	out, from, live, err := fttest.Junction(p.pOut.String(), p.bOut.String(), log)
	if err != nil || !live || out != output(p.prog) || from > len(p.pOut.String()) {
		t.Errorf("junction from the log: live %v, from %d, %v; output %q", live, from, err, out)
	}
	if m := regexp.MustCompile(`LIVE at exit [0-9]+, ([0-9.]+[µm]?s) after`).FindStringSubmatch(log); m == nil {
		t.Error("the LIVE record lacks the time since the primary was declared lost (cmd/bench-twohost reads it)")
	}
}
