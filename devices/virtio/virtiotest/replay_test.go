package virtiotest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// completions is shout as a Device that keeps the completions it takes.
type completions struct {
	shout
	got []bounce.Completion
}

func (c *completions) Attach(*virtio.MMIO)          {}
func (c *completions) Complete(x bounce.Completion) { c.got = append(c.got, x) }

// A replay delivers what the live run recorded, point by point, and
// leaves its engine nothing to start when it goes live.
func TestLogReplaysWhatWasRecorded(t *testing.T) {
	live := bounce.NewEngine(func(r bounce.Request) ([]byte, error) { return []byte{byte(r.Tag)}, nil })
	replay := ReplayEngine(t)
	for _, e := range []*bounce.Engine{live, replay} {
		for tag := range uint64(3) {
			if err := e.Submit(bounce.Request{Tag: tag + 1, Len: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var log Log
	liveDev, replayDev := &completions{}, &completions{}
	for deadline := time.Now().Add(5 * time.Second); len(liveDev.got) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("live run: %d completions", len(liveDev.got))
		}
		log.Record(live, liveDev)
		time.Sleep(time.Millisecond)
	}
	log.Record(live, liveDev) // a point with nothing to deliver
	points := 0
	for log.Replay(replay, replayDev) {
		points++
	}
	if points != len(log.Points) || log.Replay(replay, replayDev) {
		t.Errorf("%d points replayed of %d, or one past the end", points, len(log.Points))
	}
	if len(replayDev.got) != 3 || !reflect.DeepEqual(liveDev.got, replayDev.got) {
		t.Errorf("replayed %+v, recorded %+v", replayDev.got, liveDev.got)
	}
	replay.SetLive() // every transfer was delivered: nothing for the backend
	if ready, inflight := replay.Pending(); ready || inflight {
		t.Error("the replayed transfers were not marked delivered")
	}
}

func TestSameRun(t *testing.T) {
	a, b := newShout(t, 1<<16), newShout(t, 1<<16)
	for _, d := range []*Driver{a, b} {
		d.Post(0, Seg{N: 2, Fill: []byte("ab")}, Seg{N: 2, Writable: true})
		d.Notify(0)
		d.Collect()
	}
	SameRun(t, a, b)

	b.Post(1, Seg{N: 1, Fill: []byte("c")}, Seg{N: 1, Writable: true})
	b.Notify(1)
	b.Collect()
	msgs := fails(t, func(tb testing.TB) { SameRun(tb, a, b) })
	if len(msgs) != 3 || !strings.Contains(strings.Join(msgs, "\n"), "queue 1") {
		t.Errorf("failures %q, want memory, queue 1 and interrupts", msgs)
	}
	c := New(t, 1<<16, func(mem virtio.Memory, irq func(bool)) (*virtio.MMIO, error) {
		return virtio.NewMMIO(one{}, mem, irq)
	})
	c.Start(4)
	if msgs := fails(t, func(tb testing.TB) { SameRun(tb, a, c) }); len(msgs) != 2 {
		t.Errorf("different queue counts: failures %q", msgs)
	}
}

// one is shout with one queue.
type one struct{ shout }

func (one) NumQueues() int { return 1 }

func TestProgram(t *testing.T) {
	p := NewProgram([]byte{1, 2, 3, 4})
	if !p.More() || p.Next() != 1 || !reflect.DeepEqual(p.Bytes(2), []byte{2, 3}) {
		t.Fatal("reads the input out of order")
	}
	if got := p.Bytes(3); !reflect.DeepEqual(got, []byte{4, 0, 0}) || p.More() || p.Next() != 0 {
		t.Errorf("past the end: %v", got)
	}
}
