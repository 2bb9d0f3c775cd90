package ft

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testSeed returns the seed of a randomised test, logged so that a failure
// can be replayed with FTKVM_TEST_SEED.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FTKVM_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FTKVM_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (FTKVM_TEST_SEED=%d reproduces this run)", seed, seed)
	return seed
}

// runCommitScript drives an outputCommit through a script, one command a
// line, and checks the expectations in it:
//
//	hold E DATA         output DATA logged in entry E
//	append N / ack N    the channel has entries up to N / the backup acked N
//	policy P            protected, unprotected or halted
//	stopacks / close / written
//	next => X           idle | release DATA | drop N | wait E | unlogged E
//	released => N / held => N / delays => N / finished => BOOL
//
// DATA "-" is an empty write.
func runCommitScript(t *testing.T, c *outputCommit, script string) {
	t.Helper()
	at := time.Unix(0, 0)
	for i, line := range strings.Split(strings.TrimSpace(script), "\n") {
		line = strings.TrimSpace(line)
		cmd, want, _ := strings.Cut(line, " => ")
		f := strings.Fields(cmd)
		num := func(k int) uint64 {
			v, err := strconv.ParseUint(f[k], 10, 64)
			if err != nil {
				t.Fatalf("line %d %q: %v", i+1, line, err)
			}
			return v
		}
		var got string
		switch f[0] {
		case "hold":
			data := []byte(f[2])
			if f[2] == "-" {
				data = nil
			}
			if err := c.hold(num(1), data, at); err != nil {
				got = "error"
			}
		case "append":
			c.appendedTo(num(1))
		case "ack":
			c.ackedTo(num(1))
		case "policy":
			c.setPolicy(map[string]protection{"protected": protected, "unprotected": unprotected, "halted": halted}[f[1]])
		case "stopacks":
			c.stopAcks()
		case "close":
			c.close()
		case "written":
			c.written()
		case "next":
			at = at.Add(time.Millisecond)
			st := c.next(at)
			got = [...]string{"idle", "release " + string(st.data), fmt.Sprint("drop ", st.dropped),
				fmt.Sprint("wait ", st.entry), fmt.Sprint("unlogged ", st.entry)}[st.action]
			got = strings.TrimSpace(got) // an empty release reads "release"
		case "released":
			got = fmt.Sprint(c.released)
		case "held":
			got = fmt.Sprint(c.heldBytes)
		case "delays":
			got = fmt.Sprint(len(c.delays))
		case "finished":
			got = fmt.Sprint(c.finished())
		default:
			t.Fatalf("line %d: unknown command %q", i+1, line)
		}
		if got != want {
			t.Fatalf("line %d %q: got %q", i+1, line, got)
		}
	}
}

func TestOutputCommit(t *testing.T) {
	for _, c := range []struct{ name, script string }{
		{"held until its own entry is acked", `
			hold 3 a
			next => idle
			append 3
			next => wait 3
			ack 2
			next => wait 3
			ack 3
			next => release a
			released => 0
			written
			released => 1
			next => idle`},
		{"one cumulative ack releases everything logged up to it", `
			hold 2 a
			hold 4 bc
			hold 4 d
			hold 7 e
			append 9
			next => wait 2
			ack 5
			next => release abcd
			held => 1
			next => idle
			written
			next => wait 7
			ack 9
			next => release e
			written
			released => 5`},
		{"no second batch while one is being written", `
			hold 1 a
			ack 1
			next => release a
			hold 2 b
			ack 2
			next => idle
			written
			next => release b`},
		{"unprotected releases at once, whatever was acked", `
			hold 5 ab
			next => idle
			policy unprotected
			next => release ab
			written
			hold 6 c
			next => release c`},
		{"halted drops held output and keeps the count of what left", `
			hold 1 a
			hold 2 bc
			ack 1
			next => release a
			policy halted
			written
			next => drop 2
			held => 0
			released => 1
			next => idle`},
		{"acks that stop leave output held until a decision", `
			hold 2 a
			append 2
			next => wait 2
			stopacks
			next => idle
			policy unprotected
			next => release a`},
		{"output never appended, and appending over: unlogged", `
			hold 4 a
			append 3
			next => idle
			close
			next => unlogged 4
			finished => false
			stopacks
			next => idle
			policy halted
			next => drop 1
			finished => true`},
		{"finished waits for the batch being written", `
			hold 1 a
			ack 1
			close
			finished => false
			next => release a
			finished => false
			written
			finished => true`},
		{"acks never go back", `
			hold 3 a
			ack 5
			ack 2
			next => release a`},
		{"out-of-order entries and holding after close are refused", `
			hold 3 a
			hold 2 b => error
			close
			hold 4 c => error
			held => 1`},
		{"written without a batch changes nothing", `
			written
			released => 0`},
		{"empty writes are carried like any other", `
			hold 1 a
			hold 1 -
			hold 2 -
			ack 1
			next => release a
			delays => 2
			written
			ack 2
			next => release
			written
			delays => 3
			finished => false
			close
			finished => true`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var oc outputCommit
			runCommitScript(t, &oc, c.script)
		})
	}
}

// TestOutputCommitDelays: one delay per write, measured from the write's
// time to the release decision's.
func TestOutputCommitDelays(t *testing.T) {
	var c outputCommit
	t0 := time.Unix(100, 0)
	c.hold(1, []byte("a"), t0)
	c.hold(2, []byte(""), t0.Add(time.Millisecond))
	c.ackedTo(2)
	c.next(t0.Add(5 * time.Millisecond))
	if len(c.delays) != 2 || c.delays[0] != 5*time.Millisecond || c.delays[1] != 4*time.Millisecond {
		t.Fatalf("delays %v", c.delays)
	}
}

// TestCommitDelayParts: the commit delay of output released on an ack
// splits into guest write → channel and channel → ack, including output
// held only after its entry had reached the channel; output whose times
// were not noted has no parts.
func TestCommitDelayParts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	var c outputCommit
	c.setPolicy(protected)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.hold(1, []byte("a"), t0))
	c.appendedTo(1)
	c.noteAppended(1, t0.Add(ms))
	c.appendedTo(2)
	c.noteAppended(2, t0.Add(2*ms))
	must(c.hold(2, []byte("b"), t0.Add(3*ms))) // its entry went out before it was held
	c.ackedTo(2)
	c.noteAcked(2, t0.Add(7*ms))
	if st := c.next(t0.Add(8 * ms)); st.action != commitRelease || string(st.data) != "ab" {
		t.Fatalf("next = %+v, want the release of ab", st)
	}
	c.written()
	want := func(name string, got []time.Duration, w ...time.Duration) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	want("delays", c.delays, 8*ms, 5*ms)
	want("toChannel", c.toChannel, ms, 0)
	want("toAck", c.toAck, 6*ms, 4*ms)

	// Not noted: released on the ack, counted in delays only.
	must(c.hold(3, []byte("c"), t0.Add(10*ms)))
	c.appendedTo(3)
	c.ackedTo(3)
	if st := c.next(t0.Add(12 * ms)); st.action != commitRelease {
		t.Fatalf("next = %+v", st)
	}
	if len(c.delays) != 3 || len(c.toChannel) != 2 || len(c.toAck) != 2 {
		t.Errorf("unnoted output: %d delays, %d/%d parts; want 3, 2/2", len(c.delays), len(c.toChannel), len(c.toAck))
	}
}
