package ft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/split"
)

// TestPairTransitions is the state machine's table: every (side, state,
// event) the product feeds it, and a sample of what it must refuse.
func TestPairTransitions(t *testing.T) {
	const P, B = false, true
	for _, c := range []struct {
		backup bool
		from   pairState
		ev     pairEvent
		to     pairState
		act    pairAction
		bad    bool // refused: an error, state unchanged
	}{
		// Joining.
		{P, stJoining, evBackupJoined, stProtected, actNone, false},
		{P, stJoining, evNoBackup, stAlone, actRunAlone, false},
		{P, stJoining, evPeerLost, stJoining, actNone, true},
		// Losing the backup: claim, and the claim decides.
		{P, stProtected, evPeerLost, stClaiming, actClaim, false},
		{P, stClaiming, evClaimWon, stAlone, actRunAlone, false},
		{P, stClaiming, evClaimLost, stHalted, actHalt, false},
		{P, stClaiming, evClaimUnreachable, stHalted, actHalt, false},
		{P, stProtected, evClaimWon, stProtected, actNone, true}, // never won without claiming
		{P, stClaiming, evPeerLost, stClaiming, actNone, true},   // one claim only
		// The ack wait failing for good.
		{P, stProtected, evAckFailed, stHalted, actHalt, false},
		{P, stClaiming, evAckFailed, stClaiming, actNone, false}, // the claim decides
		// Late news for a decided primary.
		{P, stAlone, evPeerLost, stAlone, actNone, false},
		{P, stHalted, evAckFailed, stHalted, actNone, false},
		{P, stAlone, evClaimWon, stAlone, actNone, true},
		{P, stHalted, evClaimWon, stHalted, actNone, true}, // a halted side never comes back
		// Backup-only events on the primary.
		{P, stProtected, evLogEnded, stProtected, actNone, true},
		{P, stProtected, evRunEndedLogBroke, stProtected, actNone, true},

		// The backup notes the loss and claims once the log is replayed.
		{B, stReplaying, evPeerLost, stDraining, actNone, false},
		{B, stDraining, evPeerLost, stDraining, actNone, false},
		{B, stReplaying, evLogEnded, stClaiming, actClaim, false},
		{B, stDraining, evLogEnded, stClaiming, actClaim, false},
		{B, stClaiming, evPeerLost, stClaiming, actNone, false},
		{B, stClaiming, evClaimWon, stLive, actGoLive, false},
		{B, stClaiming, evClaimLost, stHalted, actHalt, false},
		{B, stClaiming, evClaimUnreachable, stHalted, actHalt, false},
		{B, stReplaying, evClaimWon, stReplaying, actNone, true},
		{B, stClaiming, evLogEnded, stClaiming, actNone, true},
		// The guest finished in the replay.
		{B, stReplaying, evRunEndedLogShut, stFinished, actFinish, false},
		{B, stDraining, evRunEndedLogShut, stFinished, actFinish, false},
		{B, stReplaying, evRunEndedLogBroke, stClaiming, actClaim, false},
		{B, stDraining, evRunEndedLogBroke, stClaiming, actClaim, false},
		// Final states.
		{B, stLive, evPeerLost, stLive, actNone, false},
		{B, stLive, evLogEnded, stLive, actNone, true},
		{B, stFinished, evRunEndedLogBroke, stFinished, actNone, true},
		{B, stHalted, evClaimWon, stHalted, actNone, true},
		// A won claim reported lost (a lease): a side running on it halts.
		{P, stAlone, evClaimRevoked, stHalted, actHalt, false},
		{B, stLive, evClaimRevoked, stHalted, actHalt, false},
		{B, stHalted, evClaimRevoked, stHalted, actNone, false},
		{B, stFinished, evClaimRevoked, stFinished, actNone, false},
		{B, stReplaying, evClaimRevoked, stReplaying, actNone, true},
		{P, stProtected, evClaimRevoked, stProtected, actNone, true},
		// Primary-only events on the backup.
		{B, stReplaying, evBackupJoined, stReplaying, actNone, true},
		{B, stReplaying, evAckFailed, stReplaying, actNone, true},
		{B, stReplaying, pairEvent(99), stReplaying, actNone, true},
	} {
		pc := pairCore{backup: c.backup, state: c.from}
		act, err := pc.step(c.ev, "why")
		name := fmt.Sprintf("%s %s + %s", side(c.backup), c.from, c.ev)
		if c.bad != (err != nil) || (err != nil && !errors.Is(err, errTransition)) {
			t.Errorf("%s: error %v, want refused %v", name, err, c.bad)
		}
		if pc.state != c.to || act != c.act {
			t.Errorf("%s: -> %s, %s; want %s, %s", name, pc.state, act, c.to, c.act)
		}
		if final := pc.state.final(); final != (pc.why != "") && c.to != c.from {
			t.Errorf("%s: final %v but why %q", name, final, pc.why)
		}
	}
}

func side(backup bool) string {
	if backup {
		return "backup"
	}
	return "primary"
}

func TestPairProtectionAndNames(t *testing.T) {
	for s, want := range map[pairState]protection{
		stJoining: protected, stProtected: protected, stClaiming: protected,
		stAlone: unprotected, stHalted: halted,
	} {
		pc := pairCore{state: s}
		if got := pc.protection(); got != want {
			t.Errorf("%s: protection %d, want %d", s, got, want)
		}
	}
	// The why of the first final decision is kept.
	pc := newPrimaryCore()
	pc.step(evBackupJoined, "")
	pc.step(evPeerLost, "")
	pc.step(evClaimLost, "the backup is live")
	pc.step(evAckFailed, "context canceled")
	if pc.why != "the backup is live" {
		t.Errorf("why %q", pc.why)
	}
	for _, s := range []fmt.Stringer{stFinished, pairState(42), evAckFailed, pairEvent(42), actFinish, pairAction(42)} {
		if s.String() == "" {
			t.Errorf("%#v has no name", s)
		}
	}
}

// TestPairNeverTwoLive drives a primary and a backup core through random
// interleavings of failure-detector firings, log ends, ack failures and
// storage outages, with a model test-and-set between them, and checks the
// split-brain rules: at most one side ever runs without its peer, only
// after winning the claim; a side that halted or finished never runs on;
// each side claims at most once.
func TestPairNeverTwoLive(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 10))
	events := []pairEvent{evPeerLost, evLogEnded, evRunEndedLogShut, evRunEndedLogBroke, evAckFailed, evBackupJoined, evNoBackup}
	for trial := 0; trial < 2000; trial++ {
		cores := [2]pairCore{newPrimaryCore(), newBackupCore()}
		cores[0].step(evBackupJoined, "")
		reachable := [2]bool{rng.IntN(4) != 0, rng.IntN(4) != 0}
		owner := -1 // the arbiter: who holds the pair
		claims := [2]int{}
		wasFinal := [2]pairState{-1, -1}
		var trace []string
		for step := 0; step < 12; step++ {
			i := rng.IntN(2)
			ev := events[rng.IntN(len(events))]
			act, err := cores[i].step(ev, "x")
			trace = append(trace, fmt.Sprintf("%s %s -> %s %s", side(i == 1), ev, cores[i].state, act))
			if act == actClaim {
				claims[i]++
				out := evClaimUnreachable
				if reachable[i] {
					if owner == -1 {
						owner = i
					}
					out = evClaimLost
					if owner == i {
						out = evClaimWon
					}
				}
				act, err = cores[i].step(out, "x")
				if err != nil {
					t.Fatalf("trial %d: claim outcome refused: %v\n%v", trial, err, trace)
				}
				trace = append(trace, fmt.Sprintf("%s %s -> %s %s", side(i == 1), out, cores[i].state, act))
			}
			if err != nil && !errors.Is(err, errTransition) {
				t.Fatalf("trial %d: %v", trial, err)
			}
			for j := range cores {
				s := cores[j].state
				if wasFinal[j] >= 0 && s != wasFinal[j] {
					t.Fatalf("trial %d: %s left final state %s for %s\n%v", trial, side(j == 1), wasFinal[j], s, trace)
				}
				if s.final() {
					wasFinal[j] = s
				}
				if claims[j] > 1 {
					t.Fatalf("trial %d: %s claimed twice\n%v", trial, side(j == 1), trace)
				}
			}
			pAlone, bLive := cores[0].state == stAlone, cores[1].state == stLive
			if pAlone && bLive {
				t.Fatalf("trial %d: both sides live\n%v", trial, trace)
			}
			if (pAlone && owner != 0) || (bLive && owner != 1) {
				t.Fatalf("trial %d: a side runs alone without holding the pair (owner %d)\n%v", trial, owner, trace)
			}
		}
	}
}

func TestJudgeClaim(t *testing.T) {
	now := time.Unix(1000, 0)
	lost := &split.LostError{}
	for _, c := range []struct {
		err      error
		deadline time.Time
		ev       pairEvent
		retry    bool
	}{
		{nil, now, evClaimWon, false},
		{lost, now.Add(time.Hour), evClaimLost, false},
		{fmt.Errorf("claim: %w", split.ErrLost), now.Add(time.Hour), evClaimLost, false},
		{split.ErrUnreachable, now.Add(time.Hour), evClaimUnreachable, true},
		{split.ErrCorrupt, now.Add(time.Hour), evClaimUnreachable, true},
		{split.ErrUnreachable, now.Add(claimRetry / 2), evClaimUnreachable, false},
		{split.ErrUnreachable, now, evClaimUnreachable, false},
	} {
		ev, retry := judgeClaim(c.err, now, c.deadline)
		if ev != c.ev || retry != c.retry {
			t.Errorf("judgeClaim(%v, deadline +%v) = %s, retry %v; want %s, %v", c.err, c.deadline.Sub(now), ev, retry, c.ev, c.retry)
		}
	}
}

// TestClaim runs the claim loop against the real file arbiter: the first
// claimant wins, the second loses, and a storage that is not there is
// retried until the timeout and reported unreachable.
func TestClaim(t *testing.T) {
	dir := t.TempDir()
	arb := func(dir, node string) split.Arbiter {
		a, err := split.NewFileArbiter(split.FileConfig{Dir: dir, Pair: "p", Node: node, Generation: 7, Timeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if ev, err := claim(arb(dir, "a"), time.Second); ev != evClaimWon || err != nil {
		t.Fatalf("first claim: %s %v", ev, err)
	}
	if ev, err := claim(arb(dir, "b"), time.Second); ev != evClaimLost || !errors.Is(err, split.ErrLost) {
		t.Fatalf("second claim: %s %v", ev, err)
	}
	start := time.Now()
	ev, err := claim(arb(filepath.Join(dir, "missing"), "c"), 500*time.Millisecond)
	if ev != evClaimUnreachable || err == nil {
		t.Fatalf("claim on missing storage: %s %v", ev, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("claim on missing storage gave up after %v (timeout 500ms)", d)
	}
}
