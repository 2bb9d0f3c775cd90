package replay_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// The Examples with Output lines boot guests: they run where /dev/kvm
// works (make test's KVM stage) and are left out where it does not.
func TestMain(m *testing.M) { os.Exit(kvmtest.RunExamples(m, "ExampleRecordFile")) }

// Record a bare guest's run to a file, then replay the file on a second
// VM: the replay ends in the recorded state, or ReplayFile says where it
// parted (a *replay.DivergenceError). The guest takes PIT interrupts at
// whatever instruction the host's timing gives; the replay puts them at
// the same ones.
func ExampleRecordFile() {
	img, err := bare.Build("pit_ticks") // or os.ReadFile a flat image of your own
	if err != nil {
		log.Fatal(err)
	}
	guest, err := replay.PrepareBare(img.Binary) // rdtsc sites become trapping OUTs
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ftkvm-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "pit_ticks.log")

	ctx := context.Background()
	var recorded, replayed bytes.Buffer
	res, err := replay.RecordFile(ctx, path, guest, replay.FileConfig{Console: &recorded})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("recorded: stopped at the", res.Reason, "with status", res.Status)
	if _, err := replay.ReplayFile(ctx, path, guest, replay.FileConfig{Console: &replayed}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("replayed: same console output:", bytes.Equal(recorded.Bytes(), replayed.Bytes()))
	// Output:
	// recorded: stopped at the exit port with status 0
	// replayed: same console output: true
}

// Record a guest's run with the recorder and replayer as the VM's
// drivers and the log in memory (what RecordFile and ReplayFile do with
// a file): the replay ends in the recorded state or says where it
// parted. Its counts depend on the host's timing, so it has no Output
// line; ExampleRecordFile runs the same steps.
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
