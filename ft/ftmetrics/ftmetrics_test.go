package ftmetrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A scrape follows the source: the state's one-hot gauge moves from
// protected to claiming to alone, and the figures come through in base
// units.
func TestScrapeFollowsTheState(t *testing.T) {
	var cur ft.Status
	have := false
	srv := httptest.NewServer(Handler("primary", func() (ft.Status, bool) { return cur, have }))
	defer srv.Close()

	if m := scrape(t, srv.URL); strings.Contains(m, "ftkvm_pair_state") {
		t.Fatalf("metrics before any status:\n%s", m)
	}
	for _, st := range []string{"protected", "claiming", "alone"} {
		cur, have = ft.Status{Role: "primary", State: st, Protected: st == "protected", Generation: 3,
			LagEntries: 7, LagAge: 1500 * time.Millisecond, CommitP50: 2 * time.Millisecond, CommitP99: 40 * time.Millisecond, LogBytes: 4096}, true
		m := scrape(t, srv.URL)
		for _, want := range []string{
			`ftkvm_pair_state{role="primary",state="` + st + `"} 1`,
			`ftkvm_pair_generation{role="primary"} 3`,
			`ftkvm_lag_entries{role="primary"} 7`,
			`ftkvm_lag_seconds{role="primary"} 1.5`,
			`ftkvm_commit_delay_seconds{quantile="0.99",role="primary"} 0.04`,
			`ftkvm_log_bytes_total{role="primary"} 4096`,
			`go_goroutines`,
		} {
			if !strings.Contains(m, want) {
				t.Fatalf("state %s: metrics lack %q:\n%s", st, want, m)
			}
		}
		for _, other := range States {
			if other != st && !strings.Contains(m, `ftkvm_pair_state{role="primary",state="`+other+`"} 0`) {
				t.Fatalf("state %s: %s is not 0", st, other)
			}
		}
		prot := map[bool]string{true: "1", false: "0"}[st == "protected"]
		if !strings.Contains(m, `ftkvm_pair_protected{role="primary"} `+prot) {
			t.Fatalf("state %s: protected is not %s", st, prot)
		}
	}
}

func TestFetch(t *testing.T) {
	want := ft.Status{Role: "backup", State: "replaying", Protected: true, LagEntries: 12, LastAckAge: 30 * time.Millisecond}
	have := false
	srv := httptest.NewServer(Handler("backup", func() (ft.Status, bool) { return want, have }))
	defer srv.Close()
	ctx := context.Background()
	if _, err := Fetch(ctx, srv.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("before a status: %v, want a 503", err)
	}
	have = true
	got, err := Fetch(ctx, strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != want.Role || got.State != want.State || got.LagEntries != 12 || got.LastAckAge != want.LastAckAge || !got.Protected {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// A stranger's endpoint: garbage, an endless answer, JSON without a state.
func TestFetchRefusesStrangers(t *testing.T) {
	for _, c := range []struct {
		name string
		body func(w http.ResponseWriter)
		want string
	}{
		{"garbage", func(w http.ResponseWriter) { io.WriteString(w, "<html>hello</html>") }, "invalid character"},
		{"endless", func(w http.ResponseWriter) {
			chunk := strings.Repeat("x", 4096)
			for i := 0; i < 100; i++ {
				io.WriteString(w, chunk)
			}
		}, "over"},
		{"not ours", func(w http.ResponseWriter) { io.WriteString(w, `{"name":"x"}`) }, "not an ftvm status endpoint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.body(w) }))
			defer srv.Close()
			if _, err := Fetch(context.Background(), srv.URL); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}
