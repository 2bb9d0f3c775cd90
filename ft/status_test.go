package ft

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestRollingPercentiles(t *testing.T) {
	var r rolling
	if p50, p99 := r.percentiles(); p50 != 0 || p99 != 0 {
		t.Fatalf("empty: %v %v", p50, p99)
	}
	for i := 1; i <= 100; i++ {
		r.add(time.Duration(i) * time.Millisecond)
	}
	if p50, p99 := r.percentiles(); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Fatalf("1..100 ms: p50 %v p99 %v", p50, p99)
	}
	// The window rolls: after CommitWindow samples of 1 s, the old ones
	// are gone.
	for i := 0; i < CommitWindow; i++ {
		r.add(time.Second)
	}
	if p50, p99 := r.percentiles(); p50 != time.Second || p99 != time.Second {
		t.Fatalf("after rolling: p50 %v p99 %v", p50, p99)
	}
	if len(r.buf) != CommitWindow {
		t.Fatalf("window holds %d", len(r.buf))
	}
}

func TestRank(t *testing.T) {
	for _, c := range []struct{ n, p, want int }{{1, 50, 0}, {1, 99, 0}, {2, 50, 0}, {2, 99, 1}, {10, 50, 4}, {10, 99, 9}, {1000, 99, 989}} {
		if got := rank(c.n, c.p); got != c.want {
			t.Errorf("rank(%d, %d) = %d, want %d", c.n, c.p, got, c.want)
		}
	}
}

func TestRate(t *testing.T) {
	var r rate
	t0 := time.Unix(100, 0)
	if v := r.update(t0, 1000); v != 0 {
		t.Fatalf("first reading: %v", v)
	}
	if v := r.update(t0.Add(2*time.Second), 5000); v != 2000 {
		t.Fatalf("4000 in 2 s: %v", v)
	}
	// A counter that went back (a new channel) keeps the last rate.
	if v := r.update(t0.Add(3*time.Second), 10); v != 2000 {
		t.Fatalf("after a reset: %v", v)
	}
}

func TestMonitor(t *testing.T) {
	var m Monitor
	if _, ok := m.Status(); ok {
		t.Fatal("a new monitor has a status")
	}
	m.store(Status{Role: "primary", State: "alone", Reason: "no backup came"})
	s, ok := m.Status()
	if !ok || s.State != "alone" || !s.Final() {
		t.Fatalf("got %+v %v", s, ok)
	}
	if (Status{State: "protected"}).Final() {
		t.Fatal("protected is final")
	}
}

// testLogger is a side's logger writing text records to w, as Config.Log
// does.
func testLogger(w io.Writer) *slog.Logger {
	c := Config{Log: w}
	return c.logger("backup")
}

// The lag tracker: entries noted and taken, their bytes, the age of the
// oldest (to the millisecond bucket), the time since the peer last took
// any; entries noted again or taken twice change nothing.
func TestLagTracker(t *testing.T) {
	var l lagTracker
	t0 := time.Unix(100, 0)
	var s Status
	l.fill(&s, t0)
	if s != (Status{}) {
		t.Fatalf("empty: %+v", s)
	}
	l.added(3, 300, t0)
	l.added(5, 200, t0.Add(500*time.Microsecond)) // same bucket
	l.added(8, 50, t0.Add(10*time.Millisecond))
	l.added(8, 999, t0.Add(11*time.Millisecond)) // nothing new
	s = Status{}
	l.fill(&s, t0.Add(20*time.Millisecond))
	if s.LogEntries != 8 || s.LagEntries != 8 || s.LagBytes != 550 || s.LagAge != 20*time.Millisecond || s.LastAckAge != 0 {
		t.Fatalf("nothing taken: %+v", s)
	}
	l.took(5, t0.Add(30*time.Millisecond))
	l.took(4, t0.Add(31*time.Millisecond)) // older news
	s = Status{}
	l.fill(&s, t0.Add(40*time.Millisecond))
	if s.LagEntries != 3 || s.LagBytes != 50 || s.LagAge != 30*time.Millisecond || s.LastAckAge != 10*time.Millisecond {
		t.Fatalf("taken to 5: %+v", s)
	}
	l.took(8, t0.Add(50*time.Millisecond))
	s = Status{}
	l.fill(&s, t0.Add(60*time.Millisecond))
	if s.LagEntries != 0 || s.LagBytes != 0 || s.LagAge != 0 || s.LastAckAge != 10*time.Millisecond || len(l.buckets) != 0 {
		t.Fatalf("all taken: %+v", s)
	}
	// A long lag at a high rate keeps one bucket per millisecond.
	for i := range 100000 {
		l.added(uint64(9+i), 10, t0.Add(time.Second+time.Duration(i)*time.Microsecond))
	}
	if len(l.buckets) > 101 {
		t.Fatalf("%d buckets for 100 ms of entries", len(l.buckets))
	}
}

// The reporter stamps the role and the time the state was entered, keeps
// that time while the state stays, and delivers to both the callback and
// the Monitor.
func TestReporter(t *testing.T) {
	var got []Status
	var m Monitor
	r := newReporter("backup", &Config{OnStatus: func(s Status) { got = append(got, s) }, Monitor: &m})
	t0 := time.Unix(100, 0)
	r.report(func() (Status, time.Time) { return Status{State: "replaying", LogBytes: 0}, t0 })
	r.report(func() (Status, time.Time) { return Status{State: "replaying", LogBytes: 1000}, t0.Add(time.Second) })
	r.report(func() (Status, time.Time) { return Status{State: "live", LogBytes: 3000}, t0.Add(2 * time.Second) })
	if len(got) != 3 || got[1].Since != t0 || got[2].Since != t0.Add(2*time.Second) || got[1].Role != "backup" ||
		got[1].LogBytesPerSecond != 1000 || got[2].LogBytesPerSecond != 2000 {
		t.Fatalf("reports %+v", got)
	}
	if s, ok := m.Status(); !ok || s != got[2] {
		t.Fatalf("monitor %+v %v", s, ok)
	}
}
