package replay_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

func requireKVM(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("needs /dev/kvm: %v", err)
	}
}

type recording struct {
	log     *replay.MemLog
	res     vmm.Result
	console string
	rec     replay.RecordStats
}

func record(t *testing.T, name string, cfg replay.RecorderConfig) recording {
	t.Helper()
	requireKVM(t)
	img, err := bare.Build(name)
	if err != nil {
		t.Fatal(err)
	}
	log := &replay.MemLog{}
	cfg.Sink = log
	rec, err := replay.NewRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	vm, err := vmm.New(vmm.Config{MemoryBytes: 16 << 20, Console: &out, Clock: rec.Clock(), Driver: rec, TrackDirty: true})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.LoadBare(img.Binary); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		t.Fatalf("recording %s: %v", name, err)
	}
	return recording{log: log, res: res, console: out.String(), rec: rec.Stats()}
}

func replayLog(t *testing.T, name string, events []*logpb.Event) (vmm.Result, string, replay.ReplayStats, error) {
	t.Helper()
	img, err := bare.Build(name)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: &replay.MemLog{Events: events}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	vm, err := vmm.New(vmm.Config{MemoryBytes: 16 << 20, Console: &out, Clock: rp.Clock(), Driver: rp})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.LoadBare(img.Binary); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx)
	return res, out.String(), rp.Stats(), err
}

func TestRecordReplayPITTicks(t *testing.T) {
	r := record(t, "pit_ticks", replay.RecorderConfig{})
	t.Logf("recorded: %+v, %d events, console %q", r.rec, len(r.log.Events), r.console)
	res, console, st, err := replayLog(t, "pit_ticks", r.log.Events)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	t.Logf("replayed: %+v in %v (record took %v)", st, res.Duration, r.res.Duration)
	if console != r.console {
		t.Errorf("replay console %q != recorded %q", console, r.console)
	}
	var de *replay.DivergenceError
	if errors.As(err, &de) {
		t.Fatal(de)
	}
}
