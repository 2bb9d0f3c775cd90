package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
)

// TestFTStatusEndpoint runs a Linux pair with --metrics-addr on both
// sides and reads them as an operator would, through the real ftvm
// processes: PROTECTED while the pair runs, the backup LIVE and not
// protected after the primary is killed; /metrics says the same.
func TestFTStatusEndpoint(t *testing.T) {
	dir := guestDir(t)
	e := setupFT(t)
	addr, pm, bm := freeAddr(t), freeAddr(t), freeAddr(t)
	p, b := startPairWith(t, e.Bin, addr, addr, t.TempDir(), []string{"--metrics-addr", pm}, []string{"--metrics-addr", bm},
		"--guest-dir", dir, "--window-entries", "1500")
	p.waitLog(t, "booting the guest PROTECTED", 3*time.Minute)
	ctx := context.Background()
	// The status follows the pair: give a report a second to arrive.
	waitState := func(addr, role, state string) ft.Status {
		t.Helper()
		var s ft.Status
		var err error
		for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if s, err = ftmetrics.Fetch(ctx, addr); err == nil && s.State == state {
				break
			}
		}
		if err != nil || s.Role != role || s.State != state {
			t.Fatalf("%s at %s: %+v, %v; want state %s", role, addr, s, err, state)
		}
		return s
	}
	if s := waitState(pm, "primary", "protected"); !s.Protected || s.Generation == 0 || s.LogEntries == 0 {
		t.Fatalf("the protected primary reports %+v", s)
	}
	if s := waitState(bm, "backup", "replaying"); !s.Protected {
		t.Fatalf("the replaying backup reports %+v", s)
	}
	if m := scrapeMetrics(t, pm); !strings.Contains(m, `ftkvm_pair_state{role="primary",state="protected"} 1`) || !strings.Contains(m, `ftkvm_pair_protected{role="primary"} 1`) {
		t.Fatalf("the primary's metrics:\n%s", m)
	}
	if !p.kill9() {
		t.Fatal("the primary finished before the kill: the guest's run is too short for this test")
	}
	b.waitLog(t, "LIVE at", time.Minute)
	s := waitState(bm, "backup", "live")
	if s.Protected || s.Reason == "" {
		t.Fatalf("the live backup reports %+v: want not protected, with a reason", s)
	}
	if m := scrapeMetrics(t, bm); !strings.Contains(m, `ftkvm_pair_state{role="backup",state="live"} 1`) || !strings.Contains(m, `ftkvm_pair_protected{role="backup"} 0`) {
		t.Fatalf("the live backup's metrics:\n%s", m)
	}
	if err := b.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("the live backup did not finish the guest: %v", err)
	}
}

func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
