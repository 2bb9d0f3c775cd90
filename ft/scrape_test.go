package ft_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
)

// scraper reads a side's /metrics, as Prometheus would, and notes the
// pair state each scrape showed and whether the side was protected.
type scraper struct {
	t   *testing.T
	srv *httptest.Server

	one       sync.Mutex // one scrape at a time, so their results stay in order
	mu        sync.Mutex
	states    []string // in order, without repeats
	protected map[string]bool
	logBytes  bool // a scrape showed log bytes
}

var (
	stateRe     = regexp.MustCompile(`ftkvm_pair_state\{role="\w+",state="(\w+)"\} 1\n`)
	protectedRe = regexp.MustCompile(`ftkvm_pair_protected\{role="\w+"\} ([01])\n`)
	logBytesRe  = regexp.MustCompile(`ftkvm_log_bytes_total\{role="\w+"\} [1-9]`)
)

func newScraper(t *testing.T, role string, m *ft.Monitor) *scraper {
	s := &scraper{t: t, srv: httptest.NewServer(ftmetrics.Handler(role, m.Status)), protected: map[string]bool{}}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scraper) scrape() {
	s.one.Lock()
	defer s.one.Unlock()
	resp, err := http.Get(s.srv.URL + "/metrics")
	if err != nil {
		s.t.Error(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	st, prot := stateRe.FindSubmatch(b), protectedRe.FindSubmatch(b)
	if st == nil || prot == nil {
		return // no status yet
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.states); n == 0 || s.states[n-1] != string(st[1]) {
		s.states = append(s.states, string(st[1]))
	}
	s.protected[string(st[1])] = s.protected[string(st[1])] || string(prot[1]) == "1"
	s.logBytes = s.logBytes || logBytesRe.Match(b)
}

func (s *scraper) seen() ([]string, map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.states), s.protected
}

// inOrder reports whether want appears in got in order.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestScrapeAcrossFailover runs a pair over toy machines with a Monitor
// and a metrics endpoint on each side, scrapes both while it runs (on a
// timer, and at every status report, so that no state goes unseen), and
// kills the primary: the primary's metrics showed it protected, the
// backup's state moves from replaying through claiming to live.
func TestScrapeAcrossFailover(t *testing.T) {
	tp := ft.NewToyPair(t, 40)
	pc, bc := tp.Configs()
	var pm, bm ft.Monitor
	pc.Monitor, bc.Monitor = &pm, &bm
	ps, bs := newScraper(t, "primary", &pm), newScraper(t, "backup", &bm)
	pc.OnStatus = func(ft.Status) { ps.scrape() }
	bc.OnStatus = func(ft.Status) { bs.scrape() }
	pc.StatusEvery, bc.StatusEvery = 5*time.Millisecond, 5*time.Millisecond
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				ps.scrape()
				bs.scrape()
			}
		}
	}()
	tp.KillPrimaryAt(150)
	_, bRes, _, bErr := tp.Run()
	close(stop)
	<-done
	bs.scrape()
	if !bRes.Live || bErr != nil {
		t.Fatalf("backup %q %v: want it live", bRes.Outcome, bErr)
	}
	pStates, pProt := ps.seen()
	bStates, bProt := bs.seen()
	t.Logf("scraped: primary %v, backup %v", pStates, bStates)
	if !inOrder(pStates, []string{"joining", "protected"}) || !pProt["protected"] || !ps.logBytes {
		t.Errorf("the primary's scrapes: %v, protected %v, log bytes %v", pStates, pProt, ps.logBytes)
	}
	if !inOrder(bStates, []string{"joining", "replaying", "claiming", "live"}) || bStates[len(bStates)-1] != "live" || !bProt["replaying"] || bProt["live"] {
		t.Errorf("the backup's scrapes: %v, protected %v", bStates, bProt)
	}
	// The states only move forward.
	rank := map[string]int{"joining": 1, "replaying": 2, "draining": 3, "claiming": 4, "live": 5}
	for i, st := range bStates {
		if rank[st] == 0 || (i > 0 && rank[st] <= rank[bStates[i-1]]) {
			t.Errorf("the backup's scrapes show %v: %q out of order", bStates, st)
		}
	}
	// The JSON status agrees.
	s, err := ftmetrics.Fetch(t.Context(), bs.srv.URL)
	if err != nil || s.State != "live" || s.Role != "backup" || s.Protected {
		t.Errorf("the backup's /status: %+v %v", s, err)
	}
}

// TestScrapeAlone: a primary nobody joins shows alone, not protected.
func TestScrapeAlone(t *testing.T) {
	tp := ft.NewToyPair(t, 5)
	pc, _ := tp.Configs()
	var pm ft.Monitor
	pc.Monitor = &pm
	ps := newScraper(t, "primary", &pm)
	pc.OnStatus = func(ft.Status) { ps.scrape() }
	if res, err := tp.RunAlone(50 * time.Millisecond); err != nil || !res.Live {
		t.Fatalf("primary %q %v", res.Outcome, err)
	}
	ps.scrape()
	states, prot := ps.seen()
	if !slices.Equal(states, []string{"joining", "alone"}) || prot["alone"] {
		t.Errorf("scraped %v, protected %v", states, prot)
	}
	s, err := ftmetrics.Fetch(t.Context(), ps.srv.URL)
	if err != nil || s.State != "alone" || s.Protected || s.Reason == "" {
		t.Errorf("/status: %+v %v", s, err)
	}
}
