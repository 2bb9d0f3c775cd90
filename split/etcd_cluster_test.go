package split_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdCluster is a real etcd cluster of in-process members on loopback,
// started by the tests themselves (go.etcd.io/etcd/server/v3/embed). Its
// members run with a 10 ms raft tick and no fsync, so a three-member
// cluster starts and elects a leader in well under a second; neither
// changes what the arbiter sees (linearizable transactions, leases).
type etcdCluster struct {
	t       testing.TB
	token   string
	cfgs    []*embed.Config
	members []*embed.Etcd // nil: stopped
}

// freePort reserves a loopback port by listening on it and letting it go.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}

// startEtcdCluster starts n members in dirs under base (t.TempDir if
// empty) and waits until they serve. The cluster's ID derives from token,
// so clusters with different tokens have different IDs.
func startEtcdCluster(t testing.TB, n int, token, base string, opts ...func(*embed.Config)) *etcdCluster {
	t.Helper()
	if base == "" {
		base = t.TempDir()
	}
	c := &etcdCluster{t: t, token: token}
	var initial []string
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = fmt.Sprintf("%s/m%d", base, i)
		peer, client := mustURL("http://"+freePort(t)), mustURL("http://"+freePort(t))
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialClusterToken = token
		cfg.TickMs, cfg.ElectionMs = 10, 100
		cfg.UnsafeNoFsync = true
		cfg.LogLevel = "error"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		for _, o := range opts {
			o(cfg)
		}
		initial = append(initial, cfg.Name+"="+peer.String())
		c.cfgs = append(c.cfgs, cfg)
	}
	for _, cfg := range c.cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
	}
	c.members = make([]*embed.Etcd, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { c.start(i) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(c.stopAll)
	c.waitLeader()
	return c
}

// start (re)starts member i from its data directory.
func (c *etcdCluster) start(i int) {
	e, err := embed.StartEtcd(c.cfgs[i])
	if err != nil {
		c.t.Errorf("starting etcd member %d: %v", i, err)
		return
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		c.t.Errorf("etcd member %d: %v", i, err)
	case <-time.After(20 * time.Second):
		e.Close()
		c.t.Errorf("etcd member %d not ready after 20 s", i)
		return
	}
	c.members[i] = e
}

// restart starts a stopped member again (it rejoins with its data).
func (c *etcdCluster) restart(i int) {
	c.t.Helper()
	c.cfgs[i].ClusterState = embed.ClusterStateFlagExisting
	c.start(i)
	if c.t.Failed() {
		c.t.FailNow()
	}
}

// kill stops member i abruptly: raft stops first, without handing over
// leadership, then its listeners close.
func (c *etcdCluster) kill(i int) {
	e := c.members[i]
	c.members[i] = nil
	e.Server.HardStop()
	e.Close()
}

func (c *etcdCluster) stopAll() {
	for i, e := range c.members {
		if e != nil {
			c.members[i] = nil
			e.Close()
		}
	}
}

// endpoints lists the client URLs of members idx, or of all.
func (c *etcdCluster) endpoints(idx ...int) []string {
	if len(idx) == 0 {
		for i := range c.cfgs {
			idx = append(idx, i)
		}
	}
	var eps []string
	for _, i := range idx {
		eps = append(eps, c.cfgs[i].AdvertiseClientUrls[0].String())
	}
	return eps
}

// leader is the index of the member that leads, or -1.
func (c *etcdCluster) leader() int {
	for i, e := range c.members {
		if e != nil && uint64(e.Server.Leader()) == uint64(e.Server.MemberID()) {
			return i
		}
	}
	return -1
}

func (c *etcdCluster) waitLeader() int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l := c.leader(); l >= 0 {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no etcd leader after 20 s")
	return -1
}

// moveLeader hands leadership from the current leader to member to.
func (c *etcdCluster) moveLeader(to int) {
	c.t.Helper()
	from := c.waitLeader()
	if from == to {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lead := c.members[from].Server
	if err := lead.MoveLeader(ctx, uint64(lead.MemberID()), uint64(c.members[to].Server.MemberID())); err != nil {
		c.t.Fatalf("moving etcd leadership from m%d to m%d: %v", from, to, err)
	}
}

// client is a plain etcd client of members idx (all if none), for the
// tests' own reads and writes.
func (c *etcdCluster) client(idx ...int) *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.endpoints(idx...), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// The shared cluster serves the tests that do not stop members; each of
// them uses its own pair name. It is stopped by TestMain.
var (
	sharedOnce    sync.Once
	sharedCluster *etcdCluster
	sharedDir     string
	sharedErr     error
)

// sharedEtcd starts the shared cluster on first use.
func sharedEtcd(t *testing.T) *etcdCluster {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "split-etcd")
		if sharedErr != nil {
			return
		}
		h := &onceTB{T: t}
		sharedCluster = startEtcdClusterNoCleanup(h, 3, "ftkvm-split-shared", sharedDir)
		if h.failed {
			sharedErr = fmt.Errorf("the shared etcd cluster did not start")
		}
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	c := *sharedCluster
	c.t = t
	return &c
}

// onceTB lets the shared cluster start under the first test that needs it
// without tying its lifetime to that test.
type onceTB struct {
	*testing.T
	failed bool
}

func (o *onceTB) Cleanup(func())               {}
func (o *onceTB) Errorf(f string, args ...any) { o.failed = true; o.T.Errorf(f, args...) }
func (o *onceTB) Fatal(args ...any)            { o.failed = true; o.T.Fatal(args...) }

func startEtcdClusterNoCleanup(t *onceTB, n int, token, base string) *etcdCluster {
	return startEtcdCluster(t, n, token, base)
}

// stopSharedEtcd is called by TestMain after the tests.
func stopSharedEtcd() {
	if sharedCluster != nil {
		sharedCluster.stopAll()
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
}

// clusterID asks a live member for the cluster's ID.
func (c *etcdCluster) clusterID() uint64 {
	c.t.Helper()
	for _, e := range c.members {
		if e != nil {
			return uint64(e.Server.Cluster().ID())
		}
	}
	c.t.Fatal("no member runs")
	return 0
}
