package vmm

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/devices"
)

// clockedDriver is a driver owning a clock and asking for the dirty log,
// as replay's recorder does.
type clockedDriver struct {
	LiveDriver
	clock devices.Clock
	dirty bool
}

func (d *clockedDriver) Clock() devices.Clock { return d.clock }
func (d *clockedDriver) NeedsDirtyLog() bool  { return d.dirty }

type funcClock func() int64

func (f funcClock) Now() int64 { return f() }

func TestConfigTakesClockAndDirtyLogFromTheDriver(t *testing.T) {
	own := &HostClock{}
	d := &clockedDriver{clock: own, dirty: true}
	c, err := Config{Spec: Spec{MemoryBytes: 16 << 20}, Options: Options{Driver: d}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Clock != own || !c.TrackDirty || c.Console != io.Discard {
		t.Errorf("defaults: clock %v (want the driver's), dirty log %v, console %v", c.Clock, c.TrackDirty, c.Console)
	}
	// The driver's own clock, given explicitly, is fine.
	if _, err := (Config{Spec: Spec{MemoryBytes: 16 << 20}, Options: Options{Driver: d, Clock: own}}).withDefaults(); err != nil {
		t.Errorf("explicit driver clock refused: %v", err)
	}
	d.dirty = false
	if c, _ := (Config{Spec: Spec{MemoryBytes: 16 << 20}, Options: Options{Driver: d}}).withDefaults(); c.TrackDirty {
		t.Error("dirty log on for a driver that does not ask for it")
	}
}

func TestConfigRefusesWhatCannotWork(t *testing.T) {
	d := &clockedDriver{clock: &HostClock{}}
	mem := Spec{MemoryBytes: 16 << 20}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no memory", Config{}, "memory size 0 bytes"},
		{"odd memory", Config{Spec: Spec{MemoryBytes: 16<<20 + 1}}, "multiple of 4 KiB"},
		{"too much memory", Config{Spec: Spec{MemoryBytes: MaxMemory + 4096}}, "between 2 MiB"},
		{"another clock", Config{Spec: mem, Options: Options{Driver: d, Clock: &HostClock{}}}, "not the Driver's own"},
		{"uncomparable clock", Config{Spec: mem, Options: Options{Driver: d, Clock: funcClock(func() int64 { return 0 })}}, "not the Driver's own"},
		{"input beside a driver", Config{Spec: mem, Options: Options{Driver: d, ConsoleInput: strings.NewReader("x")}}, "ConsoleInput"},
		{"memory trace without a trace", Config{Spec: mem, Options: Options{TraceMemory: true}}, "TraceMemory"},
	}
	for _, c := range cases {
		_, err := c.cfg.withDefaults()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig mentioning %q", c.name, err, c.want)
		}
	}
}
