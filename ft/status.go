package ft

import (
	"slices"
	"sync"
	"time"
)

// Status is one side's standing in the pair, for programs and people: what
// VMware FT shows as Protected / Not Protected with a reason, the log's
// bandwidth and the backup's lag, and what QEMU COLO's query-colo-status
// answers. A Monitor holds the latest; Config.OnStatus hears every change.
type Status struct {
	Role string `json:"role"` // "primary" or "backup"
	// State is the pair state machine's state: joining, protected,
	// replaying, draining, claiming, alone, live, halted or finished.
	State string `json:"state"`
	// Protected: a backup holds the log up to every released output (the
	// primary in state protected, or a backup replaying).
	Protected bool `json:"protected"`
	// Reason says why the side stands where it does (why it is not
	// protected, what ended the run).
	Reason     string    `json:"reason,omitempty"`
	Generation uint64    `json:"generation"`
	Since      time.Time `json:"since"` // when State was entered

	Exits uint64 `json:"exits"` // the guest's synchronous exits so far

	// The log: entries and bytes appended (primary) or received (backup).
	LogEntries uint64 `json:"log_entries"`
	LogBytes   uint64 `json:"log_bytes"`
	// LogBytesPerSecond over the last status period.
	LogBytesPerSecond float64 `json:"log_bytes_per_second"`

	// Lag: entries the backup has not yet acknowledged (primary) or not
	// yet replayed (backup), their bytes where known, and the age of the
	// oldest of them.
	LagEntries uint64        `json:"lag_entries"`
	LagBytes   uint64        `json:"lag_bytes"`
	LagAge     time.Duration `json:"lag_age_ns"`
	// LastAckAge is how long ago the backup's acknowledgements last moved
	// on (primary), or the backup last took an entry for replay (backup);
	// 0 before the first. The lag's times are kept to the millisecond.
	LastAckAge time.Duration `json:"last_ack_age_ns"`

	// Commit delay of released output (primary): from the guest's write to
	// its release, over the last CommitWindow outputs.
	CommitP50 time.Duration `json:"commit_p50_ns"`
	CommitP99 time.Duration `json:"commit_p99_ns"`
	Released  uint64        `json:"released"` // bytes of console output let out
}

// Final reports whether the side's pair state can no longer change.
func (s Status) Final() bool {
	switch s.State {
	case "alone", "live", "halted", "finished":
		return true
	}
	return false
}

// Monitor holds a side's latest Status: the method half of Config's status
// callback. Its zero value is ready; it is safe for concurrent use.
type Monitor struct {
	mu  sync.Mutex
	cur Status
	set bool
}

// Status returns the latest status; ok is false before the side reported
// any.
func (m *Monitor) Status() (s Status, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.set
}

func (m *Monitor) store(s Status) {
	m.mu.Lock()
	m.cur, m.set = s, true
	m.mu.Unlock()
}

// CommitWindow is how many of the latest commit delays the rolling
// percentiles cover.
const CommitWindow = 1024

// rolling keeps the latest CommitWindow durations for rolling percentiles.
type rolling struct {
	mu   sync.Mutex
	buf  []time.Duration
	next int
}

func (r *rolling) add(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < CommitWindow {
		r.buf = append(r.buf, d)
		return
	}
	r.buf[r.next] = d
	r.next = (r.next + 1) % CommitWindow
}

// percentiles returns the p50 and p99 of the window (nearest rank), zero
// when it is empty.
func (r *rolling) percentiles() (p50, p99 time.Duration) {
	r.mu.Lock()
	s := slices.Clone(r.buf)
	r.mu.Unlock()
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	return s[rank(len(s), 50)], s[rank(len(s), 99)]
}

// rank is the nearest-rank index of percentile p of n sorted values.
func rank(n, p int) int {
	i := (p*n + 99) / 100 // ceil(p*n/100)
	return max(i-1, 0)
}

// rate turns counter readings into a per-second rate over the time between
// two readings.
type rate struct {
	last  uint64
	at    time.Time
	value float64
}

func (r *rate) update(now time.Time, count uint64) float64 {
	if !r.at.IsZero() && now.After(r.at) && count >= r.last {
		r.value = float64(count-r.last) / now.Sub(r.at).Seconds()
	}
	r.last, r.at = count, now
	return r.value
}

// reporter delivers a side's status to Config.OnStatus and Config.Monitor,
// in order: at every state change and every StatusEvery.
type reporter struct {
	role     string
	onStatus func(Status)
	mon      *Monitor

	mu    sync.Mutex
	state string
	since time.Time
	bw    rate // log bytes per second between reports
}

func newReporter(role string, cfg *Config) *reporter {
	return &reporter{role: role, onStatus: cfg.OnStatus, mon: cfg.Monitor}
}

// report takes the side's status from snap, stamps it with the role, the
// time its state was entered and the log bandwidth, delivers it, and
// returns it. snap runs under the reporter's lock, so that two reports
// racing (a state change on the vCPU thread, another on a watcher) are
// delivered in the order their states were read.
func (r *reporter) report(snap func() (Status, time.Time)) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, now := snap()
	if s.State != r.state || r.since.IsZero() {
		r.state, r.since = s.State, now
	}
	s.Role, s.Since = r.role, r.since
	s.LogBytesPerSecond = r.bw.update(now, s.LogBytes)
	if r.mon != nil {
		r.mon.store(s)
	}
	if r.onStatus != nil {
		r.onStatus(s)
	}
	return s
}

// lagTracker follows the log entries the peer has not yet taken
// (acknowledged, or replayed): how many, their bytes, and when the oldest
// came. Entries are kept in buckets of a millisecond, so it holds at most
// one bucket per millisecond of lag whatever the entry rate.
type lagTracker struct {
	mu      sync.Mutex
	buckets []lagBucket
	last    uint64    // highest entry noted
	done    uint64    // entries taken up to here
	doneAt  time.Time // when done last advanced
	pending uint64    // bytes of the entries after done, where known
}

type lagBucket struct {
	upto  uint64 // entries up to here
	bytes uint64
	at    time.Time // when the first of them came
}

// added notes entries up to seq, of n bytes in all (0: unknown), at now.
func (t *lagTracker) added(seq, n uint64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= t.last {
		return
	}
	t.last = seq
	if seq <= t.done {
		return
	}
	t.pending += n
	if k := len(t.buckets); k > 0 && now.Sub(t.buckets[k-1].at) < time.Millisecond {
		t.buckets[k-1].upto, t.buckets[k-1].bytes = seq, t.buckets[k-1].bytes+n
		return
	}
	t.buckets = append(t.buckets, lagBucket{upto: seq, bytes: n, at: now})
}

// took notes that the peer took every entry up to seq, at now.
func (t *lagTracker) took(seq uint64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= t.done {
		return
	}
	t.done, t.doneAt = seq, now
	i := 0
	for i < len(t.buckets) && t.buckets[i].upto <= seq {
		t.pending -= t.buckets[i].bytes
		i++
	}
	t.buckets = t.buckets[i:]
	if len(t.buckets) == 0 {
		t.buckets, t.pending = nil, 0
	}
}

// fill sets s's log entries, lag figures and last-ack age as of now.
func (t *lagTracker) fill(s *Status, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.LogEntries = t.last
	if t.last > t.done {
		s.LagEntries = t.last - t.done
	}
	s.LagBytes = t.pending
	if len(t.buckets) > 0 {
		s.LagAge = now.Sub(t.buckets[0].at)
	}
	if !t.doneAt.IsZero() {
		s.LastAckAge = now.Sub(t.doneAt)
	}
}
