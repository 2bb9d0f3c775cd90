package logio_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

func Example() {
	var file bytes.Buffer // an *os.File in real use
	header := &logpb.Header{Version: 1, MemoryBytes: 64 << 20, Cmdline: "console=ttyS0"}

	w, err := logio.NewWriter(&file, header)
	if err != nil {
		panic(err)
	}
	for _, ev := range []*logpb.Event{
		{Seq: 1, Exits: 10, Kind: &logpb.Event_Clock{Clock: 1_000_000}},
		{Seq: 2, Exits: 12, Kind: &logpb.Event_Inject{Inject: 0x20}},
		{Seq: 3, Exits: 12, Kind: &logpb.Event_End{End: &logpb.End{Reason: 1}}},
	} {
		if err := w.Append(ev); err != nil {
			panic(err)
		}
	}
	// A recorder bug is caught at once:
	err = w.Append(&logpb.Event{Seq: 9, Kind: &logpb.Event_Tsc{Tsc: 1}})
	fmt.Println(errors.Is(err, logio.ErrSequence))
	if err := w.Close(); err != nil {
		panic(err)
	}

	r, err := logio.NewReader(&file)
	if err != nil {
		panic(err)
	}
	if err := logio.CompareHeaders(r.Header(), &logpb.Header{Version: 1, MemoryBytes: 128 << 20, Cmdline: "console=ttyS0"}); err != nil {
		fmt.Println(err)
	}
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Println(ev.GetSeq(), ev.GetExits(), logio.KindOf(ev))
	}
	// Output:
	// true
	// log was recorded on a differently configured VM (log vs this VM): memory 64 MiB vs 128 MiB
	// 1 10 clock
	// 2 12 inject
	// 3 12 end
}
