package virtiotest

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// Deliver hands completions to dev as a VMM does at a delivery point: the
// engine forgets each transfer, then the device takes its completion.
func Deliver(engine *bounce.Engine, dev virtio.Device, cs ...bounce.Completion) {
	for _, c := range cs {
		engine.Delivered(c.Tag)
		dev.Complete(c)
	}
}

// Log is what a live run delivered to a device, a batch of completions
// per delivery point, for a replay to deliver again at the same points:
// a recorder and a replayer in miniature.
type Log struct {
	Points [][]bounce.Completion
	next   int
}

// Record is a delivery point of the live run: what engine has ready goes
// to dev, and into the log.
func (l *Log) Record(engine *bounce.Engine, dev virtio.Device) {
	cs := engine.Poll()
	Deliver(engine, dev, cs...)
	l.Points = append(l.Points, cs)
}

// Replay is the next delivery point of the replay: the batch recorded
// there goes to dev, whose engine replays. It returns false, delivering
// nothing, once every point is replayed.
func (l *Log) Replay(engine *bounce.Engine, dev virtio.Device) bool {
	if l.next == len(l.Points) {
		return false
	}
	Deliver(engine, dev, l.Points[l.next]...)
	l.next++
	return true
}

// SameRun fails the test where two drivers' runs differ: guest memory,
// any used ring, or the interrupts raised.
func SameRun(t testing.TB, a, b *Driver) {
	t.Helper()
	if !bytes.Equal(a.RAM.Data, b.RAM.Data) {
		t.Error("guest memory differs")
	}
	if len(a.Rings) != len(b.Rings) {
		t.Fatalf("%d queues, and %d", len(a.Rings), len(b.Rings))
	}
	for q := range a.Rings {
		if !reflect.DeepEqual(a.Rings[q].Used, b.Rings[q].Used) {
			t.Errorf("queue %d: used rings differ: %v, and %v", q, a.Rings[q].Used, b.Rings[q].Used)
		}
	}
	if a.Rises != b.Rises {
		t.Errorf("%d interrupts, and %d", a.Rises, b.Rises)
	}
}
