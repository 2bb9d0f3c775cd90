// Package ftmetrics serves one side of an FT pair's state (ft.Status) to
// programs: as Prometheus metrics on /metrics and as JSON on /status, the
// endpoint `ftvm primary/backup --metrics-addr` opens and `ftvm status ADDR`
// reads.
//
// The metrics, each labelled with the side's role:
//
//	ftkvm_pair_state{state}             1 for the current state, 0 for the others
//	ftkvm_pair_protected                1 while a backup holds the log up to every released output
//	ftkvm_pair_generation               the split-brain generation
//	ftkvm_guest_exits_total             the guest's synchronous exits
//	ftkvm_log_entries_total             log entries appended (primary) or received (backup)
//	ftkvm_log_bytes_total               their bytes
//	ftkvm_log_bytes_per_second          over the last status period
//	ftkvm_lag_entries, ftkvm_lag_bytes  not yet acknowledged (primary) or replayed (backup)
//	ftkvm_lag_seconds                   the age of the oldest of them
//	ftkvm_last_ack_age_seconds          since the peer was last heard from
//	ftkvm_channel_rtt_seconds           the log channel's smoothed round trip (primary)
//	ftkvm_commit_delay_seconds{quantile="0.5"|"0.99"}  rolling, over ft.CommitWindow outputs
//	ftkvm_released_bytes_total          console output let out
package ftmetrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// States are the pair states ftkvm_pair_state reports, in the order of the
// pair's state machine.
var States = []string{"joining", "protected", "replaying", "draining", "claiming", "alone", "live", "halted", "finished"}

// Source returns a side's latest status; ok is false before it has one
// (ft.Monitor.Status has this shape).
type Source func() (s ft.Status, ok bool)

// collector turns a Source into metrics at every scrape.
type collector struct {
	src   Source
	descs map[string]*prometheus.Desc
}

var specs = []struct{ name, help string }{
	{"ftkvm_pair_state", "1 for the side's current pair state, 0 for the others."},
	{"ftkvm_pair_protected", "1 while a backup holds the log up to every released output."},
	{"ftkvm_pair_generation", "The split-brain generation of the pair."},
	{"ftkvm_guest_exits_total", "The guest's synchronous exits so far."},
	{"ftkvm_log_entries_total", "Log entries appended (primary) or received (backup)."},
	{"ftkvm_log_bytes_total", "Bytes of the log entries."},
	{"ftkvm_log_bytes_per_second", "Log bandwidth over the last status period."},
	{"ftkvm_lag_entries", "Entries not yet acknowledged (primary) or replayed (backup)."},
	{"ftkvm_lag_bytes", "Bytes of those entries, where known."},
	{"ftkvm_lag_seconds", "Age of the oldest entry not yet acknowledged or replayed."},
	{"ftkvm_last_ack_age_seconds", "Seconds since the peer was last heard from."},
	{"ftkvm_channel_rtt_seconds", "The log channel's smoothed round trip, the backup's ack delay included (primary)."},
	{"ftkvm_commit_delay_seconds", "Output commit delay, rolling percentiles."},
	{"ftkvm_released_bytes_total", "Bytes of console output let out."},
}

// NewCollector returns a Prometheus collector that reads src at every
// scrape; role labels every metric ("primary" or "backup").
func NewCollector(role string, src Source) prometheus.Collector {
	c := &collector{src: src, descs: map[string]*prometheus.Desc{}}
	for _, s := range specs {
		var labels []string
		switch s.name {
		case "ftkvm_pair_state":
			labels = []string{"state"}
		case "ftkvm_commit_delay_seconds":
			labels = []string{"quantile"}
		}
		c.descs[s.name] = prometheus.NewDesc(s.name, s.help, labels, prometheus.Labels{"role": role})
	}
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, ok := c.src()
	if !ok {
		return
	}
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	counter := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v))
	}
	for _, st := range States {
		gauge("ftkvm_pair_state", b2f(st == s.State), st)
	}
	gauge("ftkvm_pair_protected", b2f(s.Protected))
	gauge("ftkvm_pair_generation", float64(s.Generation))
	counter("ftkvm_guest_exits_total", s.Exits)
	counter("ftkvm_log_entries_total", s.LogEntries)
	counter("ftkvm_log_bytes_total", s.LogBytes)
	gauge("ftkvm_log_bytes_per_second", s.LogBytesPerSecond)
	gauge("ftkvm_lag_entries", float64(s.LagEntries))
	gauge("ftkvm_lag_bytes", float64(s.LagBytes))
	gauge("ftkvm_lag_seconds", s.LagAge.Seconds())
	gauge("ftkvm_last_ack_age_seconds", s.LastAckAge.Seconds())
	gauge("ftkvm_channel_rtt_seconds", s.RTT.Seconds())
	gauge("ftkvm_commit_delay_seconds", s.CommitP50.Seconds(), "0.5")
	gauge("ftkvm_commit_delay_seconds", s.CommitP99.Seconds(), "0.99")
	counter("ftkvm_released_bytes_total", s.Released)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves /metrics (Prometheus text format, with the Go runtime's
// and the process's own metrics beside the pair's) and /status (the
// latest ft.Status as JSON; 503 before the side has one).
func Handler(role string, src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(role, src), prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		s, ok := src()
		if !ok {
			http.Error(w, "no status yet: the side is starting", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
	return mux
}

// maxStatusBytes bounds a /status answer read by Fetch: a status is a few
// hundred bytes, and the far end is not trusted to stop.
const maxStatusBytes = 1 << 16

// Fetch reads the status a side serves at addr (host:port, or an http://
// URL).
func Fetch(ctx context.Context, addr string) (ft.Status, error) {
	url := addr
	if len(url) < 7 || (url[:7] != "http://" && (len(url) < 8 || url[:8] != "https://")) {
		url = "http://" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/status", nil)
	if err != nil {
		return ft.Status{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ft.Status{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes+1))
	if err != nil {
		return ft.Status{}, err
	}
	if len(body) > maxStatusBytes {
		return ft.Status{}, fmt.Errorf("status from %s: answer over %d bytes", addr, maxStatusBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return ft.Status{}, fmt.Errorf("status from %s: %s: %s", addr, resp.Status, bytesTrim(body))
	}
	var s ft.Status
	if err := json.Unmarshal(body, &s); err != nil {
		return ft.Status{}, fmt.Errorf("status from %s: %w", addr, err)
	}
	if s.Role == "" || s.State == "" {
		return ft.Status{}, errors.New("status from " + addr + ": no role or state: not an ftvm status endpoint")
	}
	return s, nil
}

func bytesTrim(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b)
}
