package ft

import (
	"errors"
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/split"
)

// pairCore is one side's standing in the pair as a pure state machine: it
// decides when the side claims the pair on shared storage and what it does
// with the outcome. It does no IO, starts no goroutine and reads no clock;
// primary and backup feed it events under their own locks and carry out the
// action step returns.
//
// The rules it encodes:
//
//   - Only a side that won the split-brain test-and-set goes on without its
//     peer (the backup goes live, the primary runs alone). A side that lost
//     it, or could not reach the storage, halts: with unreachable storage it
//     cannot know whether its peer went live.
//   - The primary claims as soon as it declares the backup lost; until the
//     claim is decided its output stays held. The backup claims only once
//     it has replayed every entry it received (the log ended), so that it
//     goes live at the point the primary's acknowledged output requires.
//   - A backup whose guest finished in the replay and whose log the primary
//     closed in order has nothing to do; if the log broke instead, the end
//     of the output may not have left the primary, so it claims.
//   - Each side claims at most once; alone, live, halted and finished are
//     final, but for one exit: a side that runs on a claim it won (alone,
//     live) halts when the arbiter reports that claim lost (an etcd lease
//     that was not renewed: the peer, or a restarter, may now start the
//     VM elsewhere).
//
// Invariant: why is set exactly when the state is final (alone, live,
// halted or finished).
type pairCore struct {
	backup bool // this side is the backup (else the primary)
	state  pairState
	why    string // what made the state final, for the result
}

// pairState is where one side stands.
type pairState int

const (
	stJoining   pairState = iota // primary: waiting for a backup to attach
	stProtected                  // primary: a backup is attached; output waits for its acks
	stReplaying                  // backup: replaying the primary's log
	stDraining                   // backup: the primary is lost; replaying what was received
	stClaiming                   // the peer is lost: the test-and-set is under way
	stAlone                      // primary: running without a backup (none came, or it won)
	stLive                       // backup: won the test-and-set and runs the guest itself
	stHalted                     // stopped: lost the test-and-set, or could not tell
	stFinished                   // backup: the primary finished the run and closed the log
)

var stateNames = [...]string{"joining", "protected", "replaying", "draining", "claiming", "alone", "live", "halted", "finished"}

func (s pairState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("pairState(%d)", int(s))
}

// final reports whether no event changes the state any more.
func (s pairState) final() bool {
	return s == stAlone || s == stLive || s == stHalted || s == stFinished
}

// pairEvent is what happened to a side.
type pairEvent int

const (
	evBackupJoined     pairEvent = iota // primary: a backup attached and has the hello
	evNoBackup                          // primary: no backup attached in time
	evPeerLost                          // the failure detector declared the peer lost
	evLogEnded                          // backup: every received entry is replayed and the log ended, the guest still running
	evRunEndedLogShut                   // backup: the guest finished in the replay and the primary closed the log in order
	evRunEndedLogBroke                  // backup: the guest finished in the replay but the log broke before the primary closed it
	evClaimWon                          // the test-and-set: this side holds the pair
	evClaimLost                         // the test-and-set: the peer holds it
	evClaimUnreachable                  // the test-and-set could not be decided within the claim timeout
	evAckFailed                         // primary: waiting for the backup's ack failed for good
	evClaimRevoked                      // the arbiter reports that the claim this side won is lost (a lease expired)
)

var eventNames = [...]string{"backup joined", "no backup", "peer lost", "log ended", "run ended, log closed", "run ended, log broken",
	"claim won", "claim lost", "storage unreachable", "ack failed", "claim revoked"}

func (e pairEvent) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("pairEvent(%d)", int(e))
}

// pairAction is what the side must do after an event.
type pairAction int

const (
	actNone     pairAction = iota // nothing (the event is noted)
	actClaim                      // run the test-and-set (claim), then feed its outcome back
	actRunAlone                   // primary: let held output out at once and stop logging; the guest runs on
	actGoLive                     // backup: re-send what the primary may not have let out, run on live
	actHalt                       // stop the guest; held output is dropped (the peer may be live)
	actFinish                     // backup: stop as a backup; the primary completed the run
)

var actionNames = [...]string{"none", "claim", "run alone", "go live", "halt", "finish"}

func (a pairAction) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("pairAction(%d)", int(a))
}

// protection is what the primary does with console output.
type protection int32

const (
	protected   protection = iota // output waits for the backup's ack
	unprotected                   // no backup: output leaves at once, the log is dropped
	halted                        // lost the pair (or cannot tell): held output is dropped
)

func newPrimaryCore() pairCore { return pairCore{state: stJoining} }
func newBackupCore() pairCore  { return pairCore{backup: true, state: stReplaying} }

// errTransition is returned for an event a state does not take; the
// caller has a bug.
var errTransition = errors.New("ft: event not expected")

// step applies an event and returns the action to carry out. why describes
// the event for the result ("the backup is live (…)"); it is kept when the
// state becomes final. An event the state does not take leaves it unchanged
// and returns an error wrapping errTransition.
func (c *pairCore) step(ev pairEvent, why string) (pairAction, error) {
	to, act, ok := c.next(ev)
	if !ok {
		side := "primary"
		if c.backup {
			side = "backup"
		}
		return actNone, fmt.Errorf("%w: %s in state %s (%s)", errTransition, ev, c.state, side)
	}
	if to != c.state && to.final() {
		c.why = why
	}
	c.state = to
	return act, nil
}

// next is the transition table.
func (c *pairCore) next(ev pairEvent) (pairState, pairAction, bool) {
	s := c.state
	if ev == evClaimRevoked {
		if s == stAlone || s == stLive {
			return stHalted, actHalt, true
		}
		return s, actNone, s.final()
	}
	if s.final() {
		// Late news for a side that has decided: a failure detector or an
		// ack wait that the decision itself ended.
		return s, actNone, ev == evPeerLost || ev == evAckFailed
	}
	switch {
	case ev == evClaimWon && s == stClaiming:
		if c.backup {
			return stLive, actGoLive, true
		}
		return stAlone, actRunAlone, true
	case (ev == evClaimLost || ev == evClaimUnreachable) && s == stClaiming:
		return stHalted, actHalt, true
	}
	if c.backup {
		switch {
		case ev == evPeerLost && (s == stReplaying || s == stDraining):
			return stDraining, actNone, true
		case ev == evPeerLost && s == stClaiming:
			return s, actNone, true
		case (ev == evLogEnded || ev == evRunEndedLogBroke) && (s == stReplaying || s == stDraining):
			return stClaiming, actClaim, true
		case ev == evRunEndedLogShut && s == stReplaying:
			return stFinished, actFinish, true
		case ev == evRunEndedLogShut && s == stDraining:
			// The failure detector fired, but the log was closed in order
			// after the End event: the primary released everything.
			return stFinished, actFinish, true
		}
		return s, actNone, false
	}
	switch {
	case ev == evBackupJoined && s == stJoining:
		return stProtected, actNone, true
	case ev == evNoBackup && s == stJoining:
		return stAlone, actRunAlone, true
	case ev == evPeerLost && s == stProtected:
		return stClaiming, actClaim, true
	case ev == evAckFailed && s == stProtected:
		return stHalted, actHalt, true
	case ev == evAckFailed && s == stClaiming:
		// The backup is gone either way; the claim decides. Output stays
		// held until then.
		return s, actNone, true
	}
	return s, actNone, false
}

// protection is the primary's output policy in the current state.
func (c *pairCore) protection() protection {
	switch c.state {
	case stAlone:
		return unprotected
	case stHalted:
		return halted
	}
	return protected
}

// claimRetry is how long claim waits before trying an unreachable storage
// again.
const claimRetry = 200 * time.Millisecond

// judgeClaim classifies one test-and-set attempt made at now, with the
// claim's deadline: won, lost (another node holds the pair), or unreachable
// (the storage could not decide and there is no time for another try). retry
// says to try again after claimRetry instead.
func judgeClaim(err error, now, deadline time.Time) (ev pairEvent, retry bool) {
	switch {
	case err == nil:
		return evClaimWon, false
	case errors.Is(err, split.ErrLost):
		return evClaimLost, false
	case now.Add(claimRetry).After(deadline):
		return evClaimUnreachable, false
	}
	return evClaimUnreachable, true
}

// haltError is a side's error when it halted: its words are the outcome,
// and it wraps the cause (the claim's error: split.ErrLost when the peer
// holds the pair, split.ErrUnreachable when the storage could not tell).
type haltError struct {
	outcome string
	cause   error
}

func (e *haltError) Error() string { return e.outcome }
func (e *haltError) Unwrap() error { return e.cause }

// claimLoss returns the channel on which an arbiter reports that a claim
// it won is lost (split.EtcdArbiter's Lost: its lease was not renewed in
// time), and the reason, or nil if the arbiter cannot lose a won claim (a
// file's claim stands for good).
func claimLoss(a split.Arbiter) (<-chan struct{}, func() error) {
	l, ok := a.(interface {
		Lost() <-chan struct{}
		LostReason() error
	})
	if !ok {
		return nil, nil
	}
	return l.Lost(), func() error {
		if err := l.LostReason(); err != nil {
			return err
		}
		return split.ErrLost
	}
}
