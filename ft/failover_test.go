package ft

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The property of output commit and go-live together: whatever the
// interleaving of the guest's log entries and outputs, the pump, the
// channel's deliveries and acks, the release loop and the primary's end
// (a crash, possibly in the middle of writing a batch, or a halt), the
// outside world sees the output of one execution of the guest — the
// primary's up to the entries the backup received, then the new
// primary's — with at most a duplicated overlap where the two meet: never a
// gap, never output the surviving execution did not produce, never
// reordered.
//
// The simulation drives the product's cores (outputCommit for the primary,
// resendLog for the backup) and models only what lies around them, the way
// primary.go and backup.go use them: the recorder logs each write with the
// released count read just before, the channel delivers and acks a prefix
// of what was appended, the backup replays every entry it received.

// wiringBug breaks the wiring around the cores, to show that the checker
// catches each way of getting output commit wrong.
type wiringBug int

const (
	noBug            wiringBug = iota
	bugAckUnreceived           // acks reach entries the backup never received (release on append)
	bugReleasedEarly           // the logged Released count includes a batch still being written
	bugCountAcked              // the logged Released count is of bytes acked, not of bytes written out
	bugCountOwnWrite           // the backup takes a write's own bytes as released
)

// failoverEnd is how the primary's run ends.
type failoverEnd int

const (
	endCrash  failoverEnd = iota // killed: a batch being written may be cut
	endHalt                      // lost the claim: held output dropped, the write in progress finishes
	endFinish                    // finished protected: everything acked and released, no failover
)

type failoverRun struct {
	end      failoverEnd
	world    []byte // what the outside saw, in order
	fromPrim int    // the first fromPrim bytes came from the primary
	survivor []byte // the whole output of the execution that lives on
	from     uint64 // where the new primary re-sent from
	trace    []string
}

// simulateFailover runs one random schedule.
func simulateFailover(rng *rand.Rand, bug wiringBug) failoverRun {
	var run failoverRun
	tracef := func(format string, a ...any) { run.trace = append(run.trace, fmt.Sprintf(format, a...)) }

	// The guest: entry 1 is the hello; later entries are events, some of
	// them console output (distinct tokens, so a reordering shows).
	last := uint64(2 + rng.IntN(40))
	out := make([][]byte, last+1)
	for e := uint64(2); e <= last; e++ {
		if rng.IntN(3) != 0 {
			out[e] = fmt.Appendf(nil, "%d;", e)
		}
	}
	logged := make([]uint64, last+1) // the Released count each output's event carries

	// The primary, up to its end. The hello is acked before the guest
	// starts.
	var c outputCommit
	now := time.Unix(0, 0)
	written, appended, received, acked := uint64(1), uint64(1), uint64(1), uint64(1)
	var lastRel uint64
	c.appendedTo(1)
	c.ackedTo(1)
	var inFlight []byte
	busy := false
	run.end = failoverEnd(rng.IntN(3))
	for steps := 0; ; steps++ {
		now = now.Add(time.Millisecond)
		if steps > 400 || (run.end != endFinish && rng.IntN(40) == 0) {
			break
		}
		switch rng.IntN(8) {
		case 0, 1: // the guest logs its next event
			if written == last {
				continue
			}
			written++
			if out[written] != nil {
				// The vCPU thread reads the count before it logs the
				// write, so it may be stale, never ahead. (The broken
				// wirings read it fresh, to show their fault.)
				rel := lastRel + rng.Uint64N(c.released-lastRel+1)
				if bug != noBug {
					rel = c.released
				}
				lastRel = rel
				if bug == bugReleasedEarly && busy {
					rel += uint64(len(inFlight))
				}
				if bug == bugCountAcked {
					if busy {
						rel += uint64(len(inFlight))
					}
					for _, h := range c.held {
						if h.entry <= acked {
							rel += uint64(len(h.data))
						}
					}
				}
				logged[written] = rel
				if err := c.hold(written, out[written], now); err != nil {
					panic(err)
				}
				tracef("write %q in entry %d (released %d)", out[written], written, rel)
			}
		case 2: // the pump appends
			if appended < written {
				appended += 1 + rng.Uint64N(written-appended)
			}
		case 7: // and then tells the release loop (the acks may be ahead)
			c.appendedTo(appended)
		case 3: // the channel delivers
			if received < appended {
				received += 1 + rng.Uint64N(appended-received)
			}
		case 4: // the backup acks
			limit := received
			if bug == bugAckUnreceived {
				limit = appended
			}
			if acked < limit {
				acked += 1 + rng.Uint64N(limit-acked)
				c.ackedTo(acked)
				tracef("ack %d (received %d)", acked, received)
			}
		case 5: // the release loop decides
			st := c.next(now)
			switch st.action {
			case commitRelease:
				inFlight, busy = st.data, true
				tracef("releasing %q", st.data)
			case commitIdle, commitWaitAck:
			default:
				panic(fmt.Sprintf("protected primary: action %d", st.action))
			}
		case 6: // the release loop's write completes
			if busy {
				run.world = append(run.world, inFlight...)
				c.written()
				busy = false
			}
		}
	}

	switch run.end {
	case endFinish:
		// The run ends protected: the pump and the channel drain, and the
		// release loop lets everything out before the log is closed.
		for written < last {
			written++
			if out[written] != nil {
				logged[written] = c.released
				c.hold(written, out[written], now)
			}
		}
		c.appendedTo(last)
		c.ackedTo(last)
		c.close()
		for !c.finished() {
			if busy {
				run.world = append(run.world, inFlight...)
				c.written()
				busy = false
			}
			if st := c.next(now); st.action == commitRelease {
				inFlight, busy = st.data, true
			} else if !busy {
				panic(fmt.Sprintf("release loop stuck: action %d with %d bytes held", st.action, c.heldBytes))
			}
		}
		run.fromPrim = len(run.world)
		for e := uint64(2); e <= last; e++ {
			run.survivor = append(run.survivor, out[e]...)
		}
		return run
	case endCrash:
		if busy {
			cut := rng.IntN(len(inFlight) + 1)
			run.world = append(run.world, inFlight[:cut]...)
			tracef("crash while writing: %d of %d bytes out", cut, len(inFlight))
		}
	case endHalt:
		c.setPolicy(halted)
		if busy {
			run.world = append(run.world, inFlight...)
			c.written()
		}
		// The release loop carries on with whatever the core decides.
		for st := c.next(now); st.action != commitIdle; st = c.next(now) {
			if st.action == commitRelease {
				run.world = append(run.world, st.data...)
				c.written()
			}
		}
	}
	run.fromPrim = len(run.world)
	// Entries in flight may still reach the backup after the primary's end.
	received += rng.Uint64N(appended - received + 1)
	tracef("primary ends (%d): backup received %d, primary released %d bytes", run.end, received, run.fromPrim)

	// The backup replays every entry it received, then goes live: it
	// re-sends what resendLog says and runs on, its guest now taking other
	// inputs and so writing other output.
	var r resendLog
	for e := uint64(2); e <= received; e++ {
		if out[e] == nil {
			continue
		}
		rel := logged[e]
		if bug == bugCountOwnWrite {
			rel += uint64(len(out[e]))
		}
		r.replayed(out[e], rel)
		run.survivor = append(run.survivor, out[e]...)
	}
	from, tail, err := r.goLive()
	if err != nil {
		tracef("go-live refused: %v", err)
		run.from = ^uint64(0)
		return run
	}
	run.from = from
	run.world = append(run.world, tail...)
	for i := 0; i < 3; i++ {
		live := fmt.Appendf(nil, "live%d;", i)
		run.world = append(run.world, live...)
		run.survivor = append(run.survivor, live...)
	}
	return run
}

// violation says how the outside world's view breaks the property, or "".
func (run *failoverRun) violation() string {
	prim, rest := run.world[:run.fromPrim], run.world[run.fromPrim:]
	if !bytes.HasPrefix(run.survivor, prim) {
		return fmt.Sprintf("the primary let out %q, which is not a prefix of the surviving execution's output %q", prim, run.survivor)
	}
	if run.end == endFinish {
		if len(rest) != 0 || len(prim) != len(run.survivor) {
			return fmt.Sprintf("a finished primary let out %q of %q", prim, run.survivor)
		}
		return ""
	}
	if run.from == ^uint64(0) {
		return "the backup refused to go live"
	}
	start := len(run.survivor) - len(rest)
	if start < 0 || !bytes.Equal(run.survivor[start:], rest) {
		return fmt.Sprintf("the new primary sent %q, which is not the end of the surviving output %q", rest, run.survivor)
	}
	if start > len(prim) {
		return fmt.Sprintf("gap: the primary let out %d bytes, the new primary resumed at byte %d (%q missing)", len(prim), start, run.survivor[len(prim):start])
	}
	if uint64(start) != run.from {
		return fmt.Sprintf("the new primary says it re-sent from %d but its output starts at byte %d", run.from, start)
	}
	return ""
}

// findViolation runs trials schedules and returns the first violation.
func findViolation(seed uint64, trials int, bug wiringBug) (string, []string) {
	rng := rand.New(rand.NewPCG(seed, uint64(bug)))
	for i := 0; i < trials; i++ {
		run := simulateFailover(rng, bug)
		if v := run.violation(); v != "" {
			return fmt.Sprintf("trial %d: %s", i, v), run.trace
		}
	}
	return "", nil
}

func TestFailoverNeverLosesOutput(t *testing.T) {
	seed := testSeed(t)
	trials := 20000
	if testing.Short() {
		trials = 5000
	}
	if v, trace := findViolation(seed, trials, noBug); v != "" {
		t.Fatalf("%s\n%s", v, strings.Join(trace, "\n"))
	}
	// The schedules reach the cases that matter.
	rng := rand.New(rand.NewPCG(seed, 0))
	var dup, cut, halts, finished int
	for i := 0; i < 2000; i++ {
		run := simulateFailover(rng, noBug)
		switch {
		case run.end == endFinish:
			finished++
		case run.end == endHalt:
			halts++
		}
		if run.end != endFinish && uint64(run.fromPrim) > run.from {
			dup++
		}
		for _, l := range run.trace {
			if strings.HasPrefix(l, "crash while writing") && !strings.HasPrefix(l, "crash while writing: 0 ") {
				cut++
			}
		}
	}
	t.Logf("of 2000 schedules: %d with a duplicated overlap, %d cut in the middle of a write, %d halts, %d finished", dup, cut, halts, finished)
	if dup == 0 || cut == 0 || halts == 0 || finished == 0 {
		t.Fatal("the schedules miss a case")
	}
}

// TestFailoverCheckerCatchesBrokenWiring: each way of wiring the cores
// wrongly loses or invents output in some schedule, and the property
// says so.
func TestFailoverCheckerCatchesBrokenWiring(t *testing.T) {
	seed := testSeed(t)
	for _, c := range []struct {
		bug  wiringBug
		want string
	}{
		{bugAckUnreceived, "not a prefix of the surviving"},
		{bugReleasedEarly, "gap"},
		{bugCountAcked, "gap"},
		// resendLog itself notices this one: the count covers bytes the
		// guest had not written when it was logged.
		{bugCountOwnWrite, "refused to go live"},
	} {
		v, _ := findViolation(seed, 20000, c.bug)
		if !strings.Contains(v, c.want) {
			t.Errorf("bug %d: violation %q, want one containing %q", c.bug, v, c.want)
		} else {
			t.Logf("bug %d caught: %.150s", c.bug, v)
		}
	}
}
