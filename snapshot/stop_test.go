package snapshot

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

// A run wrapped in StopAfter ends at a synchronous exit with ErrStopped,
// after the exit was handled (the byte reached the console) and before
// the next entry; Write then completes the exit's I/O before it reads the
// vCPU.
func TestStopAfterStopsAtAnExit(t *testing.T) {
	var console bytes.Buffer
	now := time.Unix(0, 0)
	cfg := vmm.Config{Options: vmm.Options{
		Console:  &console,
		Driver:   StopAfter(vmm.NewLiveDriver(nil), 3*time.Millisecond),
		HostTime: func() time.Time { now = now.Add(time.Millisecond); return now },
	}}
	var steps []vmmtest.Step
	for _, c := range "abcdefgh" {
		steps = append(steps, vmmtest.Out(0x3f8, byte(c)))
	}
	vm, cpu := vmmtest.New(t, cfg, vmmtest.Script(steps...))
	_, err := vm.Run(context.Background())
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("run ended with %v, want ErrStopped", err)
	}
	if n := console.Len(); n == 0 || n == len(steps) || vm.Point().Exits != uint64(n) {
		t.Fatalf("stopped at %v with %q on the console", vm.Point(), console.String())
	}
	before := len(cpu.Calls())
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, vm, "g", "test"); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cpu.Calls()[before:], "complete") {
		t.Errorf("Write did not complete the pending exit: %v", cpu.Calls()[before:])
	}
	f, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.Exits != vm.Point().Exits {
		t.Errorf("header says %d exits, the run made %d", f.Header.Exits, vm.Point().Exits)
	}
}
