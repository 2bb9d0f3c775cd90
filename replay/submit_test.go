package replay

import (
	"testing"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// A Submit event marks where the primary submitted a device write: the
// replay passes it only once it has reached that exit, so a backup that
// goes live at the end of its log has replayed past the submission.
func TestSubmitIsPassedOnlyAtItsExit(t *testing.T) {
	log := &MemLog{Events: []*logpb.Event{
		{Seq: 1, Exits: 5, Kind: &logpb.Event_Submit{Submit: &logpb.Submit{Tag: 1, Len: 512}}},
		{Seq: 2, Exits: 9, Kind: &logpb.Event_Inject{Inject: 0x30}},
	}}
	rp, err := NewReplayer(ReplayerConfig{Source: log})
	if err != nil {
		t.Fatal(err)
	}
	m := newToy(nil)
	rp.vm = m
	m.SetPoint(vmm.Point{Exits: 4, Kind: vmm.AtExit})
	if ev := rp.peek(); ev.GetSubmit() == nil {
		t.Fatalf("at exit 4 the next event is %s, want the submission at exit 5", describe(ev))
	}
	m.SetPoint(vmm.Point{Exits: 5, Kind: vmm.AtExit})
	if ev := rp.peek(); ev.GetInject() == 0 || rp.stats.Submits != 1 {
		t.Fatalf("at exit 5: next event %s, %d submissions passed; want the injection and 1", describe(ev), rp.stats.Submits)
	}
}
