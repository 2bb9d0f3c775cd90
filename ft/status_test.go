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
