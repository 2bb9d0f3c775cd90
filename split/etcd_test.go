package split_test

// The etcd arbiter's tests run against real etcd: a three-member cluster
// of in-process members on loopback (etcd_cluster_test.go), never a mock.
// Most tests share one cluster, each with its own pair name; the tests
// that stop members start their own. Which races run where:
//
//   - make test (no -short): 50 goroutine contenders x 100 generations,
//     each with its own etcd client (its own connections, as a separate
//     host would have); 10 x 30 with the leader killed and, later,
//     leadership moved, in the middle of a round; 8 processes x 10.
//   - -short: the goroutine race at 50 x 30; no processes.
//   - FTKVM_SOAK=1 (make soak): the processes at the full size,
//     50 x 100, with the leader killed and leadership moved on the way.
//
// Run BenchmarkEtcdClaim for the claim's latency (p50, p99):
//
//	go test -run '^$' -bench EtcdClaim -benchtime 1000x ./split/

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/ftkvm/ftkvm/split"
)

func etcdArbiter(t testing.TB, cfg split.EtcdConfig) *split.EtcdArbiter {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second // a loaded test machine is not a partition
	}
	a, err := split.NewEtcdArbiter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func mustLoseEtcd(t *testing.T, err error, a *split.EtcdArbiter, gen uint64, winner string) {
	t.Helper()
	var lost *split.LostError
	if !errors.As(err, &lost) || !errors.Is(err, split.ErrLost) {
		t.Fatalf("got %v, want a *LostError wrapping ErrLost", err)
	}
	if errors.Is(err, split.ErrUnreachable) || errors.Is(err, split.ErrCorrupt) {
		t.Fatalf("loss %v also claims to be another error", err)
	}
	if lost.Winner.Owner != winner || lost.Winner.Generation != gen {
		t.Fatalf("winner %+v, want %s in generation %d", lost.Winner, winner, gen)
	}
	if !strings.Contains(err.Error(), a.ClaimKey(gen)) || !strings.Contains(err.Error(), fmt.Sprintf("%q", winner)) {
		t.Fatalf("message %q does not name the winner and key %s", err, a.ClaimKey(gen))
	}
}

func TestEtcdSingleWinnerOwnerAndReclaim(t *testing.T) {
	c := sharedEtcd(t)
	ctx := context.Background()
	cfg := split.EtcdConfig{Endpoints: c.endpoints(), Pair: "single", Generation: 1}
	cfg.Node = "hostA"
	a := etcdArbiter(t, cfg)
	cfg.Node = "hostB"
	b := etcdArbiter(t, cfg)

	if rec, err := a.Owner(ctx); err != nil || rec.Owner != "" || rec.Generation != 1 || rec.Pair != "single" {
		t.Fatalf("Owner before any claim: %+v, %v", rec, err)
	}
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatalf("re-claim by the holder: %v", err)
	}
	mustLoseEtcd(t, b.TestAndSet(ctx), a, 1, "hostA")
	for _, x := range []*split.EtcdArbiter{a, b} {
		if rec, err := x.Owner(ctx); err != nil || rec.Owner != "hostA" || rec.Generation != 1 {
			t.Fatalf("Owner: %+v, %v", rec, err)
		}
	}
	if _, err := b.Advance(ctx); !errors.Is(err, split.ErrLost) || b.Generation() != 1 {
		t.Fatalf("the loser's Advance: %v, generation %d", err, b.Generation())
	}
	select {
	case <-a.Lost():
		t.Fatalf("holder lost: %v", a.LostReason())
	default:
	}
}

// Contenders, each with its own client, race for each generation: exactly
// one wins and every other names it.
func TestEtcdGoroutinesRaceOneWinner(t *testing.T) {
	procs, rounds := 50, 100
	if testing.Short() {
		procs, rounds = 50, 30
	}
	c := sharedEtcd(t)
	race(t, c, "race", procs, rounds, nil)
}

// race runs procs contenders over rounds generations of pair; between
// rounds, disrupt (if set) runs as each round starts, concurrently with its
// claims, and may stop members or move the leader. A
// contender told ErrUnreachable retries, as ft does, until it wins or
// loses.
func race(t *testing.T, c *etcdCluster, pair string, procs, rounds int, disrupt func(round int)) {
	cluster := c.clusterID()
	clients := make([]*clientv3.Client, procs)
	for i := range clients {
		clients[i] = c.client()
	}
	var retries atomic.Int64
	for gen := uint64(1); gen <= uint64(rounds); gen++ {
		start := make(chan struct{})
		results := make([]error, procs)
		var wg sync.WaitGroup
		for i := range procs {
			a := etcdArbiter(t, split.EtcdConfig{Client: clients[i], ClusterID: cluster, Pair: pair, Node: fmt.Sprintf("n%d", i), Generation: gen})
			wg.Go(func() {
				defer a.Close()
				<-start
				deadline := time.Now().Add(20 * time.Second)
				for {
					err := a.TestAndSet(context.Background())
					results[i] = err
					if !errors.Is(err, split.ErrUnreachable) || time.Now().After(deadline) {
						return
					}
					retries.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		close(start)
		if disrupt != nil {
			// In the middle of the round, while claims are in flight.
			wg.Go(func() { disrupt(int(gen)) })
		}
		wg.Wait()
		var winners []int
		for i, err := range results {
			if err == nil {
				winners = append(winners, i)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("generation %d: winners %v, want exactly one (results %v)", gen, winners, results)
		}
		want := fmt.Sprintf("n%d", winners[0])
		for i, err := range results {
			var lost *split.LostError
			if i != winners[0] && (!errors.As(err, &lost) || lost.Winner.Owner != want) {
				t.Fatalf("generation %d: contender %d: %v, want a loss to %s", gen, i, err, want)
			}
		}
	}
	t.Logf("%d contenders x %d generations: one winner each (%d retries after ErrUnreachable)", procs, rounds, retries.Load())
}

// The same race goes on while the leader is killed (SIGKILL-like: raft
// stops without handing over) and, later, leadership moves.
func TestEtcdRaceAcrossMemberKillAndLeaderChange(t *testing.T) {
	t.Parallel() // mostly waits: for members to stop, for timeouts
	c := startEtcdCluster(t, 3, "ftkvm-split-kill", "")
	var killed = -1
	race(t, c, "kill", 10, 30, func(round int) {
		switch round {
		case 11:
			killed = c.waitLeader()
			c.kill(killed)
			t.Logf("round %d: killed the leader, m%d", round, killed)
		case 21:
			l := c.waitLeader()
			to := 3 - killed - l // the third member
			c.moveLeader(to)
			t.Logf("round %d: moved leadership from m%d to m%d", round, l, to)
		}
	})
	if c.leader() == killed {
		t.Fatal("the killed member leads")
	}
}

// A contender whose only etcd member is cut off, or whose member is on the
// minority side, never wins: it is told ErrUnreachable, while the majority
// side's contender wins; after healing it learns it lost.
func TestEtcdMinorityNeverWins(t *testing.T) {
	t.Parallel() // mostly waits: for members to stop, for timeouts
	c := startEtcdCluster(t, 3, "ftkvm-split-minority", "")
	ctx := context.Background()
	cfg := split.EtcdConfig{Endpoints: c.endpoints(2), Pair: "cut", Node: "minority", Generation: 1, Timeout: 500 * time.Millisecond}
	m := etcdArbiter(t, cfg)
	cfg.Endpoints, cfg.Node, cfg.Timeout = c.endpoints(0, 1), "majority", 5*time.Second
	maj := etcdArbiter(t, cfg)

	// Member 2 is down: the minority contender reaches nobody.
	c.kill(2)
	if err := m.TestAndSet(ctx); !errors.Is(err, split.ErrUnreachable) || errors.Is(err, split.ErrLost) {
		t.Fatalf("cut-off contender: %v, want ErrUnreachable", err)
	}
	if err := maj.TestAndSet(ctx); err != nil {
		t.Fatalf("majority side: %v", err)
	}
	c.restart(2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := m.TestAndSet(ctx)
		if errors.Is(err, split.ErrUnreachable) && time.Now().Before(deadline) {
			continue
		}
		mustLoseEtcd(t, err, m, 1, "majority")
		break
	}

	// Generation 2, and now member 2 is up but alone: it cannot reach a
	// quorum, so neither a claim nor a linearizable read gets through it.
	cfg2 := split.EtcdConfig{Endpoints: c.endpoints(2), Pair: "cut", Node: "minority", Generation: 2, Timeout: 500 * time.Millisecond}
	m2 := etcdArbiter(t, cfg2)
	c.kill(0)
	c.kill(1)
	for range 3 {
		if err := m2.TestAndSet(ctx); !errors.Is(err, split.ErrUnreachable) {
			t.Fatalf("contender on a member without quorum: %v, want ErrUnreachable", err)
		}
	}
	if _, err := m2.Owner(ctx); !errors.Is(err, split.ErrUnreachable) {
		t.Fatalf("Owner through a member without quorum: %v, want ErrUnreachable", err)
	}
}

// A live node cut from the etcd majority halts: Lost closes, OnLost is
// called, before the lease TTL has passed, and the claim is no longer
// confirmed to it.
func TestEtcdLostLeaseHaltsLiveSide(t *testing.T) {
	c := startEtcdCluster(t, 3, "ftkvm-split-lease", "")
	ctx := context.Background()
	onLost := make(chan error, 1)
	a := etcdArbiter(t, split.EtcdConfig{
		Endpoints: c.endpoints(2), Pair: "lease", Node: "live", Generation: 1,
		Timeout: 500 * time.Millisecond, LeaseTTL: 2 * time.Second,
		OnLost: func(err error) { onLost <- err },
	})
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // renewals keep it alive past half the TTL...
	select {
	case <-a.Lost():
		t.Fatalf("lost while connected: %v", a.LostReason())
	default:
	}
	// Raft stops at once on both; closing their listeners takes longer
	// and is left to the end.
	c.members[0].Server.HardStop()
	c.members[1].Server.HardStop()
	cut := time.Now()
	select {
	case <-a.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed 5 s after the cut")
	}
	took := time.Since(cut)
	if took > 2*time.Second {
		t.Fatalf("Lost closed %v after the cut, later than the 2 s lease", took)
	}
	err := <-onLost
	if !errors.Is(err, split.ErrLeaseExpired) || !errors.Is(err, split.ErrLost) || err.Error() != a.LostReason().Error() {
		t.Fatalf("OnLost got %v (reason %v), want ErrLeaseExpired", err, a.LostReason())
	}
	if err := a.TestAndSet(ctx); !errors.Is(err, split.ErrLeaseExpired) {
		t.Fatalf("TestAndSet after the lease was lost: %v", err)
	}
	t.Logf("halted %v after the cut: %v", took.Round(time.Millisecond), err)
}

// A lease that etcd expired (here: revoked) is refused with a clear error,
// as is a claim held under another run's lease.
func TestEtcdExpiredLeaseRefused(t *testing.T) {
	c := sharedEtcd(t)
	ctx := context.Background()
	cli := c.client()
	cfg := split.EtcdConfig{Endpoints: c.endpoints(), Pair: "expired", Node: "hostA", Generation: 1, LeaseTTL: 3 * time.Second}
	a := etcdArbiter(t, cfg)
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}

	// A second run of hostA (a restart) has its own lease: the claim names
	// it, but it cannot prove that it is the live one.
	again := etcdArbiter(t, cfg)
	err := again.TestAndSet(ctx)
	if !errors.Is(err, split.ErrLeaseExpired) || !strings.Contains(err.Error(), "another run") {
		t.Fatalf("second run of the holder: %v, want ErrLeaseExpired naming another run", err)
	}

	hold, err := cli.Get(ctx, "/ftkvm/split/expired/hold/", clientv3.WithPrefix())
	if err != nil || len(hold.Kvs) != 1 {
		t.Fatalf("hold key: %v, %v", hold, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(hold.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Lost():
	case <-time.After(3 * time.Second):
		t.Fatal("Lost not closed after the lease was revoked")
	}
	if !errors.Is(a.LostReason(), split.ErrLeaseExpired) || !strings.Contains(a.LostReason().Error(), "expired") {
		t.Fatalf("reason %v", a.LostReason())
	}
	// A fresh arbiter of hostA finds the claim without a hold key.
	err = etcdArbiter(t, cfg).TestAndSet(ctx)
	if !errors.Is(err, split.ErrLeaseExpired) || !strings.Contains(err.Error(), "hold key is gone") {
		t.Fatalf("claim whose lease expired: %v", err)
	}
	// The decision stands: the other node still loses.
	cfg.Node = "hostB"
	mustLoseEtcd(t, etcdArbiter(t, cfg).TestAndSet(ctx), a, 1, "hostA")
}

func TestEtcdBadRecordsRefused(t *testing.T) {
	c := sharedEtcd(t)
	ctx := context.Background()
	cli := c.client()
	good := func(pair string, gen uint64) string {
		return fmt.Sprintf("ftkvm split claim v1\npair: %s\ngeneration: %d\nowner: x\nwhen: 2026-11-03T10:00:00Z\ncrc32c: 00000000\n", pair, gen)
	}
	for gen, tc := range map[uint64]struct{ value, want string }{
		1: {"ftkvm split claim v2\npair: bad\ngeneration: 1\nowner: hostB\n", "another version of ftkvm"},
		2: {"hello\n", "not a"},
		3: {good("bad", 3), "checksum"},
		4: {"", "empty"},
	} {
		a := etcdArbiter(t, split.EtcdConfig{Endpoints: c.endpoints(), Pair: "bad", Node: "hostA", Generation: gen})
		if _, err := cli.Put(ctx, a.ClaimKey(gen), tc.value); err != nil {
			t.Fatal(err)
		}
		err := a.TestAndSet(ctx)
		if !errors.Is(err, split.ErrCorrupt) || errors.Is(err, split.ErrLost) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), a.ClaimKey(gen)) {
			t.Fatalf("generation %d (%q): %v, want ErrCorrupt saying %q", gen, tc.value, err, tc.want)
		}
		if _, err := a.Owner(ctx); !errors.Is(err, split.ErrCorrupt) {
			t.Fatalf("Owner of generation %d: %v", gen, err)
		}
	}
	// A valid record of another generation under this generation's key.
	other := etcdArbiter(t, split.EtcdConfig{Endpoints: c.endpoints(), Pair: "bad", Node: "hostA", Generation: 9})
	if _, err := other.Advance(ctx); err != nil {
		t.Fatal(err)
	}
	rec, _ := cli.Get(ctx, other.ClaimKey(9))
	if _, err := cli.Put(ctx, other.ClaimKey(10), string(rec.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	if err := other.TestAndSet(ctx); !errors.Is(err, split.ErrCorrupt) || !strings.Contains(err.Error(), "generation 9") {
		t.Fatalf("record of generation 9 under generation 10's key: %v", err)
	}
}

// An endpoint that answers for another cluster is refused, whether the
// cluster ID is configured or the endpoints disagree.
func TestEtcdWrongClusterRefused(t *testing.T) {
	c := sharedEtcd(t)
	other := startEtcdCluster(t, 1, "ftkvm-split-other", "")
	cfg := split.EtcdConfig{Pair: "wrong", Node: "hostA", Generation: 1, Timeout: 5 * time.Second}

	cfg.Endpoints = append(c.endpoints(), other.endpoints()...)
	_, err := split.NewEtcdArbiter(cfg)
	if !errors.Is(err, split.ErrWrongCluster) || !errors.Is(err, split.ErrCorrupt) || !strings.Contains(err.Error(), other.endpoints()[0]) {
		t.Fatalf("mixed clusters: %v, want ErrWrongCluster naming %s", err, other.endpoints()[0])
	}

	a := etcdArbiter(t, split.EtcdConfig{Endpoints: c.endpoints(), Pair: "wrong", Node: "probe", Generation: 1})
	if err := a.TestAndSet(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := c.client().Status(context.Background(), c.endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoints = other.endpoints()
	cfg.ClusterID = st.Header.ClusterId
	if _, err := split.NewEtcdArbiter(cfg); !errors.Is(err, split.ErrWrongCluster) {
		t.Fatalf("configured cluster ID %x, endpoint of another: %v", cfg.ClusterID, err)
	}
	cfg.Endpoints = c.endpoints()
	ok := etcdArbiter(t, cfg)
	cfg.ClusterID++
	if _, err := split.NewEtcdArbiter(cfg); !errors.Is(err, split.ErrWrongCluster) {
		t.Fatalf("wrong configured cluster ID: %v", err)
	}
	mustLoseEtcd(t, ok.TestAndSet(context.Background()), ok, 1, "probe")

	// An arbiter whose endpoint later answers for another cluster (its
	// client is swapped here, as a DNS change or a rebuilt cluster would)
	// refuses the answer.
	cfg.ClusterID = st.Header.ClusterId
	cfg.Client = other.client()
	swapped := etcdArbiter(t, cfg)
	if err := swapped.TestAndSet(context.Background()); !errors.Is(err, split.ErrWrongCluster) || errors.Is(err, split.ErrLost) {
		t.Fatalf("claim answered by another cluster: %v, want ErrWrongCluster", err)
	}
	if _, err := swapped.Owner(context.Background()); !errors.Is(err, split.ErrWrongCluster) {
		t.Fatalf("Owner answered by another cluster: %v", err)
	}
	cfg.ClusterID = 0
	if _, err := split.NewEtcdArbiter(cfg); err != nil {
		t.Fatalf("client of one cluster, no ID configured: %v", err)
	}
}

func TestEtcdAdvance(t *testing.T) {
	c := sharedEtcd(t)
	ctx := context.Background()
	cfg := split.EtcdConfig{Endpoints: c.endpoints(), Pair: "advance", Generation: 1, LeaseTTL: 3 * time.Second}
	cfg.Node = "primary"
	p := etcdArbiter(t, cfg)
	cfg.Node = "backup"
	b := etcdArbiter(t, cfg)

	if rec, err := b.Latest(ctx); err != nil || rec.Owner != "" || rec.Pair != "advance" {
		t.Fatalf("Latest with no claim: %+v, %v", rec, err)
	}
	// Failover: the backup wins generation 1 and re-protects with a new
	// backup in generation 2; the old primary, cut off meanwhile, loses.
	if err := b.TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := b.Advance(ctx)
	if err != nil || next != 2 || b.Generation() != 2 {
		t.Fatalf("Advance: %d, %v (generation %d)", next, err, b.Generation())
	}
	mustLoseEtcd(t, p.TestAndSet(ctx), p, 1, "backup")
	// Advance from a generation nobody claimed claims it first.
	cfg.Node, cfg.Generation = "spare", 2
	s := etcdArbiter(t, cfg)
	if next, err := b.Advance(ctx); err != nil || next != 3 {
		t.Fatalf("second Advance: %d, %v", next, err)
	}
	mustLoseEtcd(t, s.TestAndSet(ctx), s, 2, "backup")
	// After Advance, the old generation's lease no longer halts the node:
	// it ends, and the node claims its new generation with a new one.
	hold, err := c.client().Get(ctx, "/ftkvm/split/advance/hold/", clientv3.WithPrefix())
	if err != nil || len(hold.Kvs) != 2 || b.Generation() != 3 || hold.Kvs[0].Lease != hold.Kvs[1].Lease {
		t.Fatalf("hold keys of generations 1 and 2, at 3: %v, %v", hold, err)
	}
	if _, err := c.client().Revoke(ctx, clientv3.LeaseID(hold.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a renewal every second finds it gone
	select {
	case <-b.Lost():
		t.Fatal(b.LostReason())
	default:
	}
	if rec, err := s.Latest(ctx); err != nil || rec.Generation != 2 || rec.Owner != "backup" {
		t.Fatalf("Latest: %+v, %v", rec, err)
	}
	// A claimed next generation means the pair name is used twice. (The
	// Advance claims generation 3 first, with a new lease.)
	cfg.Node, cfg.Generation = "intruder", 4
	if err := etcdArbiter(t, cfg).TestAndSet(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Advance(ctx); !errors.Is(err, split.ErrCorrupt) || !strings.Contains(err.Error(), "used twice") || b.Generation() != 3 {
		t.Fatalf("Advance into a claimed generation: %v (generation %d)", err, b.Generation())
	}
}

func TestEtcdConfigAndURL(t *testing.T) {
	base := split.EtcdConfig{Endpoints: []string{"127.0.0.1:1"}, Pair: "p", Node: "n", Generation: 1}
	for name, mod := range map[string]func(*split.EtcdConfig){
		"no endpoints":   func(c *split.EtcdConfig) { c.Endpoints = nil },
		"no generation":  func(c *split.EtcdConfig) { c.Generation = 0 },
		"bad pair":       func(c *split.EtcdConfig) { c.Pair = ".x" },
		"bad node":       func(c *split.EtcdConfig) { c.Node = "a b" },
		"fraction ttl":   func(c *split.EtcdConfig) { c.LeaseTTL = 1500 * time.Millisecond },
		"cert no key":    func(c *split.EtcdConfig) { c.CAFile, c.CertFile = "/ca", "/cert" },
		"cert no ca":     func(c *split.EtcdConfig) { c.CertFile, c.KeyFile = "/cert", "/key" },
		"prefix no /":    func(c *split.EtcdConfig) { c.Prefix = "/x" },
		"negative delay": func(c *split.EtcdConfig) { c.Timeout = -1 },
	} {
		cfg := base
		mod(&cfg)
		if _, err := split.NewEtcdArbiter(cfg); !errors.Is(err, split.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
	if eps, err := split.ParseEtcdURL("etcd://h1:2379,[::1]:2379"); err != nil || !slices.Equal(eps, []string{"h1:2379", "[::1]:2379"}) {
		t.Errorf("ParseEtcdURL: %v, %v", eps, err)
	}
	for _, bad := range []string{"h1:2379", "etcd://", "etcd://h1", "etcd://h1:1,,h2:2", "etcd://h1:2379/x", "/mnt/ft"} {
		if _, err := split.ParseEtcdURL(bad); !errors.Is(err, split.ErrInvalidConfig) {
			t.Errorf("ParseEtcdURL(%q): %v", bad, err)
		}
	}
	// Nothing listens: unreachable, not a win.
	base.Timeout = 300 * time.Millisecond
	if _, err := split.NewEtcdArbiter(base); !errors.Is(err, split.ErrUnreachable) {
		t.Errorf("no etcd: %v, want ErrUnreachable", err)
	}
}

// Open's constructor is what ft.Config.NewArbiter takes.
func TestEtcdOpen(t *testing.T) {
	c := sharedEtcd(t)
	url := "etcd://" + strings.Join(slices.Collect(func(yield func(string) bool) {
		for _, ep := range c.endpoints() {
			if !yield(strings.TrimPrefix(ep, "http://")) {
				return
			}
		}
	}), ",")
	newA, err := split.Open(url, split.EtcdConfig{Pair: "open", Node: "hostA"})
	if err != nil {
		t.Fatal(err)
	}
	newB, err := split.Open(url, split.EtcdConfig{Pair: "open", Node: "hostB"})
	if err != nil {
		t.Fatal(err)
	}
	var f func(uint64) (split.Arbiter, error) = newA
	a, err := f(7)
	if err != nil || a.Generation() != 7 {
		t.Fatalf("%v, %v", a, err)
	}
	b, _ := newB(7)
	if err := b.TestAndSet(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.TestAndSet(context.Background()); !errors.Is(err, split.ErrLost) {
		t.Fatalf("%v", err)
	}
	if _, err := newA(0); !errors.Is(err, split.ErrInvalidConfig) {
		t.Fatalf("generation 0: %v", err)
	}
	if _, err := split.Open("etcd://127.0.0.1:1", split.EtcdConfig{Pair: "open", Node: "hostA", Timeout: 200 * time.Millisecond}); !errors.Is(err, split.ErrUnreachable) {
		t.Fatalf("Open without etcd: %v", err)
	}
}

// BenchmarkEtcdClaim measures one claim on the three-member loopback
// cluster, with fsync, and reports its p50 and p99: "prepared" with the
// lease taken ahead, as Open's constructor does (one transaction: a round
// trip to the leader and one raft commit), "cold" granting the lease
// first (two of each).
func BenchmarkEtcdClaim(b *testing.B) {
	// With fsync, unlike the tests: the figure is for a durable claim.
	c := startEtcdCluster(b, 3, "ftkvm-split-bench", "", func(cfg *embed.Config) { cfg.UnsafeNoFsync = false })
	cli := c.client()
	cluster := c.clusterID()
	gen := uint64(0)
	for _, prepared := range []bool{true, false} {
		name := map[bool]string{true: "prepared", false: "cold"}[prepared]
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				gen++
				a, err := split.NewEtcdArbiter(split.EtcdConfig{Client: cli, ClusterID: cluster, Pair: "bench", Node: "n", Generation: gen})
				if err != nil {
					b.Fatal(err)
				}
				if prepared {
					if err := a.Prepare(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				t0 := time.Now()
				if err := a.TestAndSet(ctx); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				b.StopTimer()
				a.Close()
				b.StartTimer()
			}
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
