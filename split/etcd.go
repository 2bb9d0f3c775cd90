package split

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultLeaseTTL is the lease of an EtcdArbiter when EtcdConfig.LeaseTTL
// is zero.
const DefaultLeaseTTL = 5 * time.Second

// DefaultEtcdPrefix is where an EtcdArbiter keeps its keys when
// EtcdConfig.Prefix is empty.
const DefaultEtcdPrefix = "/ftkvm/split/"

// Sentinels of the etcd arbiter. Each wraps one of the package's general
// sentinels, so callers that only know those still do the right thing.
var (
	// ErrWrongCluster: an etcd endpoint answered with a cluster ID other
	// than the expected one (EtcdConfig.ClusterID, or the one the other
	// endpoints agree on). Its answers cannot be trusted: wraps ErrCorrupt.
	ErrWrongCluster = fmt.Errorf("%w: etcd endpoint belongs to another cluster", ErrCorrupt)
	// ErrLeaseExpired: this node's claim stands in etcd, but the lease that
	// proves the node is still the live one has expired (it was cut from
	// the etcd majority for longer than the lease TTL) or belongs to
	// another run of the node. Wraps ErrLost: the node must halt.
	ErrLeaseExpired = fmt.Errorf("%w: lease expired", ErrLost)
)

// EtcdConfig configures an EtcdArbiter.
type EtcdConfig struct {
	// Endpoints are the etcd members' client addresses, "host:port" or
	// "http(s)://host:port". Required unless Client is set.
	Endpoints []string
	// CAFile, CertFile and KeyFile are PEM files for TLS to etcd: with
	// CAFile the connection runs TLS and checks the members' certificates
	// against it; CertFile and KeyFile, both or neither, are this node's
	// client certificate (etcd's --client-cert-auth).
	CAFile, CertFile, KeyFile string
	// ClusterID, if not zero, is the etcd cluster's ID (etcdctl endpoint
	// status -w json shows it as cluster_id). Without it, all endpoints
	// must report the same ID, and every later answer must carry it.
	ClusterID uint64
	// Client, if set, is used instead of dialing Endpoints (and is not
	// closed by Close). Its endpoints are checked like Endpoints.
	Client *clientv3.Client

	// Prefix of the arbiter's keys; DefaultEtcdPrefix if empty.
	Prefix string
	// Pair, Node and Generation: as in FileConfig.
	Pair       string
	Node       string
	Generation uint64
	// Timeout bounds each trip to etcd; DefaultTimeout if zero. A context
	// deadline, if earlier, wins.
	Timeout time.Duration
	// LeaseTTL is this node's lease, whole seconds, at least 1 s;
	// DefaultLeaseTTL if zero. A live node cut from the etcd majority
	// halts (see Lost) somewhat before this has passed. See the package
	// documentation for how to choose it.
	LeaseTTL time.Duration
	// OnLost, if set, is called once, on its own goroutine, when Lost is
	// closed, with the reason.
	OnLost func(error)
}

func (c *EtcdConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Client == nil && len(c.Endpoints) == 0:
		return bad("Endpoints is required (the etcd members' client addresses)")
	case c.Generation == 0:
		return bad("Generation is required (>= 1, from the pair's handshake)")
	case c.Generation == math.MaxUint64:
		return bad("Generation %d leaves no room to advance", c.Generation)
	case c.Timeout < 0:
		return bad("negative Timeout %v", c.Timeout)
	case c.LeaseTTL < 0 || c.LeaseTTL%time.Second != 0:
		return bad("LeaseTTL %v: want whole seconds (etcd leases count seconds)", c.LeaseTTL)
	case (c.CertFile == "") != (c.KeyFile == ""):
		return bad("CertFile and KeyFile go together")
	case c.CertFile != "" && c.CAFile == "":
		return bad("a client certificate needs CAFile too (TLS to etcd)")
	case c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/"):
		return bad("Prefix %q must end in '/'", c.Prefix)
	}
	if err := checkPair(c.Pair); err != nil {
		return bad("Pair: %v", err)
	}
	if err := checkNode(c.Node); err != nil {
		return bad("Node: %v", err)
	}
	return nil
}

// EtcdArbiter is an Arbiter on an etcd cluster. The claim of generation G
// is the key <Prefix><Pair>/claim/<G>, created once by a single
// transaction (compare: the key does not exist yet) that also writes
// <Prefix><Pair>/hold/<G> under this node's lease. The claim record, in
// the file arbiter's format, is never changed or removed; the hold key is
// the live node's proof that it still reaches the etcd majority. See the
// package documentation. Its methods are safe for concurrent use.
type EtcdArbiter struct {
	cli       *clientv3.Client
	ownClient bool
	cluster   uint64
	prefix    string
	pair      string
	node      string
	timeout   time.Duration
	ttl       time.Duration
	onLost    func(error)

	gen       atomic.Uint64
	advanceMu sync.Mutex

	mu       sync.Mutex
	lease    clientv3.LeaseID // 0: none (yet, or expired)
	deadline time.Time        // the lease surely lives until then
	held     uint64           // generation whose claim this node won with lease; 0: none
	lost     chan struct{}
	lostErr  error
	stop     chan struct{}
	loopDone chan struct{}
	closed   bool

	now func() time.Time
}

var _ Arbiter = (*EtcdArbiter)(nil)

// NewEtcdArbiter checks cfg, connects to etcd and checks that every
// endpoint answers for the same (or the configured) cluster. It fails
// with ErrUnreachable if no endpoint answers within Timeout.
func NewEtcdArbiter(cfg EtcdConfig) (*EtcdArbiter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := newEtcdArbiter(cfg)
	cli, own, err := dialEtcd(cfg, a.timeout)
	if err != nil {
		return nil, a.errorf(0, ErrUnreachable, err, "connecting to etcd")
	}
	a.cli, a.ownClient = cli, own
	if !own && cfg.ClusterID != 0 {
		// A client handed over (Open's, a test's) with its cluster known:
		// every answer is checked against it, no need to ask again.
		a.cluster = cfg.ClusterID
		return a, nil
	}
	if a.cluster, err = checkCluster(cli, cfg.ClusterID, a.timeout); err != nil {
		if own {
			cli.Close()
		}
		return nil, a.errorf(0, nil, err, "")
	}
	return a, nil
}

func newEtcdArbiter(cfg EtcdConfig) *EtcdArbiter {
	a := &EtcdArbiter{
		prefix:  cfg.Prefix,
		pair:    cfg.Pair,
		node:    cfg.Node,
		timeout: cfg.Timeout,
		ttl:     cfg.LeaseTTL,
		onLost:  cfg.OnLost,
		lost:    make(chan struct{}),
		stop:    make(chan struct{}),
		now:     time.Now,
	}
	if a.prefix == "" {
		a.prefix = DefaultEtcdPrefix
	}
	if a.timeout == 0 {
		a.timeout = DefaultTimeout
	}
	if a.ttl == 0 {
		a.ttl = DefaultLeaseTTL
	}
	a.gen.Store(cfg.Generation)
	return a
}

// Open connects to the etcd cluster named by url, "etcd://host1:2379,
// host2:2379,...", and returns a constructor of arbiters for the pair and
// node in cfg, which is what ft.Config.NewArbiter takes. cfg's Endpoints,
// Client and Generation are ignored; TLS, cluster ID, timeouts, lease TTL
// and OnLost apply to every arbiter made. The connection stays open for
// the process's life. Open checks the cluster ID of every endpoint now,
// so a wrong endpoint is refused before a pair starts.
func Open(url string, cfg EtcdConfig) (func(generation uint64) (Arbiter, error), error) {
	eps, err := ParseEtcdURL(url)
	if err != nil {
		return nil, err
	}
	cfg.Endpoints, cfg.Client, cfg.Generation = eps, nil, 1
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	first, err := NewEtcdArbiter(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Client, cfg.ClusterID = first.cli, first.cluster
	return func(gen uint64) (Arbiter, error) {
		c := cfg
		c.Generation = gen
		if err := c.validate(); err != nil {
			return nil, err
		}
		a := newEtcdArbiter(c)
		a.cli, a.cluster = first.cli, first.cluster
		// The pair starts now and claims later, if ever: take the lease
		// already, so that the claim is one transaction. On failure the
		// claim tries again.
		go a.Prepare(context.Background())
		return a, nil
	}, nil
}

// ParseEtcdURL parses "etcd://host1:2379,host2:2379" into endpoints.
func ParseEtcdURL(url string) ([]string, error) {
	rest, ok := strings.CutPrefix(url, "etcd://")
	if !ok {
		return nil, fmt.Errorf("%w: arbiter %q: want etcd://host:port[,host:port...]", ErrInvalidConfig, url)
	}
	var eps []string
	for _, ep := range strings.Split(rest, ",") {
		if ep == "" || strings.ContainsAny(ep, "/?# ") || !strings.Contains(ep, ":") {
			return nil, fmt.Errorf("%w: arbiter %q: endpoint %q is not host:port", ErrInvalidConfig, url, ep)
		}
		eps = append(eps, ep)
	}
	return eps, nil
}

func dialEtcd(cfg EtcdConfig, timeout time.Duration) (*clientv3.Client, bool, error) {
	if cfg.Client != nil {
		return cfg.Client, false, nil
	}
	var tc *tls.Config
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, false, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, false, fmt.Errorf("%s: no PEM certificate", cfg.CAFile)
		}
		tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, false, err
			}
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	eps := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		switch {
		case strings.Contains(ep, "://"):
			eps[i] = ep
		case tc != nil:
			eps[i] = "https://" + ep
		default:
			eps[i] = "http://" + ep
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         tc,
		DialTimeout: timeout,
		Logger:      zap.NewNop(),
	})
	return cli, true, err
}

// checkCluster asks every endpoint of cli for its cluster ID. They must
// all agree, with want if it is set. Endpoints that do not answer are
// skipped (every later answer is checked too), but one must answer.
func checkCluster(cli *clientv3.Client, want uint64, timeout time.Duration) (uint64, error) {
	type answer struct {
		ep  string
		id  uint64
		err error
	}
	eps := cli.Endpoints()
	answers := make(chan answer, len(eps))
	for _, ep := range eps {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			st, err := cli.Status(ctx, ep)
			if err != nil {
				answers <- answer{ep: ep, err: err}
				return
			}
			answers <- answer{ep: ep, id: st.Header.GetClusterId()}
		}()
	}
	got, from := want, "the configured cluster ID"
	var errs []error
	var mismatch error
	// Status may dial past its context; stop waiting at the timeout.
	timer := time.NewTimer(timeout + timeout/10)
	defer timer.Stop()
	answered := 0
collect:
	for range eps {
		var a answer
		select {
		case a = <-answers:
		case <-timer.C:
			errs = append(errs, fmt.Errorf("no answer within %v", timeout))
			break collect
		}
		switch {
		case a.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", a.ep, a.err))
		case got == 0:
			answered++
			got, from = a.id, a.ep
		default:
			answered++
		}
		if a.err == nil && a.id != got && mismatch == nil {
			mismatch = fmt.Errorf("%w: %s answers for cluster %x, but %s says %x: refusing it (check the endpoint list)", ErrWrongCluster, a.ep, a.id, from, got)
		}
	}
	if mismatch != nil {
		return 0, mismatch
	}
	if answered == 0 {
		return 0, fmt.Errorf("%w: no etcd endpoint answered: %w", ErrUnreachable, errors.Join(errs...))
	}
	return got, nil
}

// Generation is the pair generation this arbiter claims in: the configured
// one, plus one for each successful Advance.
func (a *EtcdArbiter) Generation() uint64 { return a.gen.Load() }

// ClaimKey is the etcd key of generation gen's claim. Generations are
// zero-padded so that keys sort by generation.
func (a *EtcdArbiter) ClaimKey(gen uint64) string {
	return fmt.Sprintf("%s%s/claim/%020d", a.prefix, a.pair, gen)
}

func (a *EtcdArbiter) holdKey(gen uint64) string {
	return fmt.Sprintf("%s%s/hold/%020d", a.prefix, a.pair, gen)
}

// Lost is closed when this node, holding the claim of its current
// generation, can no longer prove it holds it: its lease was not renewed
// in time (the node is cut from the etcd majority) or etcd says it is
// gone. The live node must then halt without releasing more output: an
// operator or a restarter that sees the hold key gone may start the VM
// elsewhere. LostReason says why. A node that does not hold a claim is
// not told: it gets a new lease at its next claim.
func (a *EtcdArbiter) Lost() <-chan struct{} { return a.lost }

// LostReason is why Lost was closed, or nil while it is open.
func (a *EtcdArbiter) LostReason() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lostErr
}

// Close stops renewing the lease (so a held claim's hold key expires
// after the TTL: a live node closes only as it stops) and closes the
// etcd connection if the arbiter made it.
func (a *EtcdArbiter) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	close(a.stop)
	done := a.loopDone
	a.mu.Unlock()
	if done != nil {
		<-done
	}
	if a.ownClient {
		return a.cli.Close()
	}
	return nil
}

// TestAndSet claims the current generation; see Arbiter. It returns nil
// only if etcd holds this node's claim and this node's lease, alive,
// holds the generation's hold key.
func (a *EtcdArbiter) TestAndSet(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return a.testAndSet(ctx, a.gen.Load())
}

func (a *EtcdArbiter) testAndSet(ctx context.Context, gen uint64) error {
	for try := 0; ; try++ {
		lease, err := a.ensureLease(ctx, gen)
		if err != nil {
			return err
		}
		err = a.claim(ctx, gen, lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && try == 0 {
			// The lease ran out before the transaction, which then wrote
			// nothing: if it did not hold a claim, take a new one.
			a.leaseGone(lease, fmt.Errorf("etcd no longer knows lease %x", lease))
			continue
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return a.errorf(gen, ErrUnreachable, err, "claiming %s: the lease expires before the claim", a.ClaimKey(gen))
		}
		return err
	}
}

// claim is the test-and-set: one transaction.
func (a *EtcdArbiter) claim(ctx context.Context, gen uint64, lease clientv3.LeaseID) error {
	ck, hk := a.ClaimKey(gen), a.holdKey(gen)
	mine := Record{Pair: a.pair, Generation: gen, Owner: a.node, When: a.now().UTC()}
	resp, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ck), "=", 0)).
		Then(clientv3.OpPut(ck, string(encodeRecord(mine))), clientv3.OpPut(hk, a.node, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(ck), clientv3.OpGet(hk)).
		Commit()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return err
	}
	if err != nil {
		return a.errorf(gen, ErrUnreachable, err, "claiming %s", ck)
	}
	if err := a.checkHeader(resp.Header.GetClusterId(), gen); err != nil {
		return err
	}
	if resp.Succeeded {
		return a.hold(gen, lease)
	}
	rec, err := a.decodeClaim(gen, resp.Responses[0].GetResponseRange().GetKvs())
	if err != nil {
		return err
	}
	if rec.Owner == "" {
		return a.errorf(gen, ErrCorrupt, nil, "claim %s is absent although the transaction found it: claims must never be removed", ck)
	}
	if rec.Owner != a.node {
		return &LostError{Winner: rec, Path: "etcd " + ck}
	}
	// This node's claim: held only if its own live lease still holds the
	// generation (an earlier answer of this arbiter's that was lost, or a
	// repeated call).
	holds := resp.Responses[1].GetResponseRange().GetKvs()
	if len(holds) == 1 && clientv3.LeaseID(holds[0].Lease) == lease {
		return a.hold(gen, lease)
	}
	why := "the hold key is gone: the lease that held it expired (this node was cut from the etcd majority for longer than the lease TTL)"
	if len(holds) == 1 {
		why = fmt.Sprintf("the hold key is under lease %x, not this arbiter's %x: another run of node %q claimed it", holds[0].Lease, lease, a.node)
	}
	err = a.errorf(gen, ErrLeaseExpired, nil, "claim %s names this node, but %s: refusing; this node must halt", ck, why)
	a.markLost(gen, err)
	return err
}

// decodeClaim checks the value of a claim key. No value is an empty
// Record; anything but a whole v1 record for this pair and generation is
// ErrCorrupt.
func (a *EtcdArbiter) decodeClaim(gen uint64, kvs []*mvccpb.KeyValue) (Record, error) {
	if len(kvs) == 0 {
		return Record{Pair: a.pair, Generation: gen}, nil
	}
	key, data := string(kvs[0].Key), kvs[0].Value
	if magic, _, _ := bytes.Cut(data, []byte("\n")); bytes.HasPrefix(magic, []byte("ftkvm split claim ")) && string(magic) != recordMagic {
		return Record{}, a.errorf(gen, ErrCorrupt, nil,
			"claim %s was written by another version of ftkvm (%q; this one reads %q): refusing it, nothing is decided", key, magic, recordMagic)
	}
	rec, err := decodeRecord(data)
	if err != nil {
		return Record{}, a.errorf(gen, ErrCorrupt, nil, "claim %s: %v", key, err)
	}
	if rec.Pair != a.pair || rec.Generation != gen {
		return Record{}, a.errorf(gen, ErrCorrupt, nil, "claim %s is for pair %q generation %d", key, rec.Pair, rec.Generation)
	}
	return rec, nil
}

// Owner reads the claim for the current generation (a linearizable read);
// see Arbiter.
func (a *EtcdArbiter) Owner(ctx context.Context) (Record, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return a.readClaim(ctx, a.gen.Load())
}

func (a *EtcdArbiter) readClaim(ctx context.Context, gen uint64) (Record, error) {
	resp, err := a.cli.Get(ctx, a.ClaimKey(gen))
	if err != nil {
		return Record{}, a.errorf(gen, ErrUnreachable, err, "reading claim %s", a.ClaimKey(gen))
	}
	if err := a.checkHeader(resp.Header.GetClusterId(), gen); err != nil {
		return Record{}, err
	}
	return a.decodeClaim(gen, resp.Kvs)
}

// Advance claims the current generation and moves this arbiter to the
// next; see Arbiter and FileArbiter.Advance. Each of its two trips has its
// own Timeout.
func (a *EtcdArbiter) Advance(ctx context.Context) (uint64, error) {
	a.advanceMu.Lock()
	defer a.advanceMu.Unlock()
	gen := a.gen.Load()
	if gen == math.MaxUint64 {
		return gen, a.errorf(gen, ErrCorrupt, nil, "cannot advance past the largest generation")
	}
	if err := a.TestAndSet(ctx); err != nil {
		return gen, err
	}
	next := gen + 1
	rctx, cancel := context.WithTimeout(ctx, a.timeout)
	rec, err := a.readClaim(rctx, next)
	cancel()
	if err != nil {
		return gen, err
	}
	if rec.Owner != "" {
		return gen, a.errorf(next, ErrCorrupt, nil,
			"already claimed by node %q (key %s) before it was started: is pair name %q used twice?",
			rec.Owner, a.ClaimKey(next), a.pair)
	}
	a.mu.Lock()
	a.gen.Store(next)
	a.held = 0 // the new generation is not claimed: a lost lease no longer halts
	a.mu.Unlock()
	return next, nil
}

// Latest reads the claim of the pair's highest claimed generation; see
// FileArbiter.Latest.
func (a *EtcdArbiter) Latest(ctx context.Context) (Record, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	from := a.prefix + a.pair + "/claim/"
	resp, err := a.cli.Get(ctx, from, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return Record{}, a.errorf(0, ErrUnreachable, err, "scanning %s", from)
	}
	if err := a.checkHeader(resp.Header.GetClusterId(), 0); err != nil {
		return Record{}, err
	}
	if len(resp.Kvs) == 0 {
		return Record{Pair: a.pair}, nil
	}
	digits := strings.TrimPrefix(string(resp.Kvs[0].Key), from)
	gen, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || a.ClaimKey(gen) != string(resp.Kvs[0].Key) {
		return Record{}, a.errorf(0, ErrCorrupt, nil, "key %s is not a claim key", resp.Kvs[0].Key)
	}
	return a.decodeClaim(gen, resp.Kvs)
}

func (a *EtcdArbiter) checkHeader(cluster uint64, gen uint64) error {
	if cluster != a.cluster {
		return a.errorf(gen, ErrWrongCluster, nil, "an endpoint answered for cluster %x, want %x: refusing its answer", cluster, a.cluster)
	}
	return nil
}

// Prepare grants this node's lease ahead of the claim, so that
// TestAndSet is a single transaction (one round trip to the etcd leader).
// Optional: TestAndSet grants the lease itself if there is none.
func (a *EtcdArbiter) Prepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	_, err := a.ensureLease(ctx, a.gen.Load())
	return err
}

// ensureLease returns this node's lease, granting one if it has none.
func (a *EtcdArbiter) ensureLease(ctx context.Context, gen uint64) (clientv3.LeaseID, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, a.errorf(gen, ErrUnreachable, nil, "arbiter closed")
	}
	if a.lostErr != nil {
		return 0, a.lostErr
	}
	if a.lease != 0 {
		return a.lease, nil
	}
	// Whatever etcd grants, the lease lives at least ttl from before the
	// request, measured on the leader's clock.
	sent := a.now()
	resp, err := a.cli.Grant(ctx, int64(a.ttl/time.Second))
	if err != nil {
		return 0, a.errorf(gen, ErrUnreachable, err, "granting a lease")
	}
	if err := a.checkHeader(resp.ResponseHeader.GetClusterId(), gen); err != nil {
		return 0, err
	}
	a.lease, a.deadline = resp.ID, a.leaseEnd(sent)
	if a.loopDone == nil {
		a.loopDone = make(chan struct{})
		go a.keepAlive()
	}
	return a.lease, nil
}

// leaseEnd is when a lease renewed at sent surely still lives: a tenth of
// the TTL short of it, for the leader's clock running faster than this
// one's and for the time Lost takes to act.
func (a *EtcdArbiter) leaseEnd(sent time.Time) time.Time {
	return sent.Add(a.ttl - a.ttl/10)
}

// hold records that the claim of gen is this node's under lease. If the
// keep-alive gave the lease up meanwhile (its renewal was overdue as the
// claim went through), the node cannot count on it: ErrLeaseExpired.
func (a *EtcdArbiter) hold(gen uint64, lease clientv3.LeaseID) error {
	a.mu.Lock()
	if a.lease == lease {
		if gen == a.gen.Load() {
			a.held = gen
		}
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	err := a.errorf(gen, ErrLeaseExpired, nil, "claim %s is this node's, but its lease %x was given up as the claim went through (not renewed in time): refusing; this node must halt", a.ClaimKey(gen), lease)
	a.markLost(gen, err)
	return err
}

// keepAlive renews the lease every third of its TTL, on its own clock:
// the lease is lost once leaseEnd passes without a renewal, before etcd
// can have expired it.
func (a *EtcdArbiter) keepAlive() {
	defer close(a.loopDone)
	for {
		a.mu.Lock()
		lease, deadline := a.lease, a.deadline
		a.mu.Unlock()
		wait := a.ttl / 3
		if lease == 0 {
			wait = a.ttl
		} else if d := deadline.Sub(a.now()); d <= 0 {
			a.leaseGone(lease, fmt.Errorf("lease %x not renewed in time (no etcd majority reached since %s)", lease, deadline.Add(-a.ttl+a.ttl/10).Format(time.RFC3339Nano)))
			continue
		} else {
			// Renew early enough to retry before the deadline.
			wait = min(wait, d/2)
		}
		select {
		case <-a.stop:
			return
		case <-time.After(wait):
		}
		if lease == 0 {
			continue
		}
		sent := a.now()
		resp, err, ok := a.renew(lease, deadline)
		if !ok {
			return
		}
		switch {
		case err == nil && resp.ResponseHeader.GetClusterId() != a.cluster:
			a.leaseGone(lease, fmt.Errorf("renewing lease %x: %w: answer from cluster %x, want %x", lease, ErrWrongCluster, resp.ResponseHeader.GetClusterId(), a.cluster))
		case err == nil && resp.TTL > 0:
			a.mu.Lock()
			if a.lease == lease {
				a.deadline = a.leaseEnd(sent)
			}
			a.mu.Unlock()
		case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
			a.leaseGone(lease, fmt.Errorf("etcd says lease %x has expired", lease))
		}
		// Other errors: retried at the next turn, until the deadline.
	}
}

// renew sends one keep-alive and waits for its answer until deadline, on
// this side's clock whatever the RPC does. ok is false if the arbiter
// was closed meanwhile.
func (a *EtcdArbiter) renew(lease clientv3.LeaseID, deadline time.Time) (resp *clientv3.LeaseKeepAliveResponse, err error, ok bool) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	type result struct {
		resp *clientv3.LeaseKeepAliveResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := a.cli.KeepAliveOnce(ctx, lease)
		done <- result{resp, err}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r := <-done:
		return r.resp, r.err, true
	case <-timer.C:
		return nil, context.DeadlineExceeded, true
	case <-a.stop:
		return nil, nil, false
	}
}

// leaseGone forgets lease; if it held the current generation, this node
// has lost the proof that it is the live one.
func (a *EtcdArbiter) leaseGone(lease clientv3.LeaseID, why error) {
	a.mu.Lock()
	if a.lease != lease {
		a.mu.Unlock()
		return
	}
	a.lease = 0
	held := a.held
	a.mu.Unlock()
	if held != 0 {
		a.markLost(held, a.errorf(held, ErrLeaseExpired, why, "node %q can no longer prove it holds claim %s; it must halt", a.node, a.ClaimKey(held)))
	}
}

func (a *EtcdArbiter) markLost(gen uint64, err error) {
	a.mu.Lock()
	if a.lostErr != nil || gen != a.gen.Load() {
		a.mu.Unlock()
		return
	}
	a.lostErr = err
	a.held = 0
	close(a.lost)
	a.mu.Unlock()
	if a.onLost != nil {
		go a.onLost(err)
	}
}

// errorf formats "split: pair P generation G: <sentinel>: <what>[: cause]"
// like FileArbiter's; a nil sentinel leaves it to cause.
func (a *EtcdArbiter) errorf(gen uint64, sentinel, cause error, format string, args ...any) error {
	where := "split: etcd: pair " + a.pair
	if gen != 0 {
		where += " generation " + strconv.FormatUint(gen, 10)
	}
	what := fmt.Sprintf(format, args...)
	switch {
	case sentinel == nil:
		return fmt.Errorf("%s: %w", where, cause)
	case cause == nil:
		return fmt.Errorf("%s: %w: %s", where, sentinel, what)
	}
	return fmt.Errorf("%s: %w: %s: %w", where, sentinel, what, cause)
}
