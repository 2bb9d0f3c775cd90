package replay_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// Record a guest's run, then replay it from the log on a second VM: the
// replay ends in the recorded state or says where it parted. It needs
// /dev/kvm, so it has no Output line (go test compiles it, does not run
// it); `make test` runs the same steps in replay/suite.
func Example() {
	img, err := bare.Build("pit_read")
	if err != nil {
		log.Fatal(err)
	}
	g, err := tscpatch.PrepareFlat(img.Binary, vmm.BareLoadAddr)
	if err != nil {
		log.Fatal(err)
	}
	spec := vmm.Spec{MemoryBytes: 16 << 20, TSCSites: g.Table, Epoch: time.Now()}

	run := func(d vmm.Driver, console *bytes.Buffer) (*vmm.VM, vmm.Result) {
		vm, err := vmm.New(vmm.Config{Spec: spec, Options: vmm.Options{Driver: d, Console: console}})
		if err != nil {
			log.Fatal(err)
		}
		if err := vm.LoadBare(g.Image); err != nil {
			log.Fatal(err)
		}
		res, err := vm.Run(context.Background())
		if err != nil {
			log.Fatal(err) // a replay's *replay.DivergenceError lands here
		}
		return vm, res
	}

	// Record: every clock read, injection and landmark goes to the log.
	var events replay.MemLog
	rec, err := replay.NewRecorder(replay.RecorderConfig{Sink: &events, FingerprintEvery: 100})
	if err != nil {
		log.Fatal(err)
	}
	var recorded bytes.Buffer
	vm, res := run(rec, &recorded)
	vm.Close()
	st := rec.Stats()
	fmt.Printf("recorded %v: %d events, %d landmarks\n", res.Reason, st.Events, st.Landmarks)

	// Replay on a fresh VM of the same Spec.
	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: &replay.MemLog{Events: events.Events}})
	if err != nil {
		log.Fatal(err)
	}
	var replayed bytes.Buffer
	vm, _ = run(rp, &replayed)
	vm.Close()
	fmt.Println("same console:", bytes.Equal(recorded.Bytes(), replayed.Bytes()))
}
