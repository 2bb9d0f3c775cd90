package vmm

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/tscpatch"
)

// Config is the machine (Spec) and how one run of it is driven and
// observed (Options). The zero value of every optional field is a
// sensible default.
type Config struct {
	Spec
	Options
}

// Spec is the machine a guest runs on. A log header pins what it
// describes (replay.NewHeader), so a recording and its replay are given
// equal Specs.
type Spec struct {
	// MemoryBytes is the guest RAM size: a multiple of 4 KiB, at least
	// 2 MiB, at most MaxMemory.
	MemoryBytes uint64
	// Epoch is the wall-clock time the RTC shows when the device clock
	// reads zero. Default: the host's time at creation.
	Epoch time.Time
	// TSCSites, if set, are the guest's rdtsc/rdtscp instructions patched
	// to trapping OUTs (see package tscpatch): an OUT to their ports
	// from a listed site reads the Driver's TSC. Nil: those ports are
	// ordinary unassigned ports.
	TSCSites *tscpatch.SiteTable
}

// Options say how one run is driven and observed. They may differ
// between a recording and its replay.
type Options struct {
	// Console receives what the guest writes to COM1. Default: io.Discard.
	Console io.Writer
	// ConsoleInput, if set, is read by the default Driver (a LiveDriver)
	// and fed to COM1's receiver. A Driver of your own takes console
	// input itself (replay.RecorderConfig.Input), so setting both is an
	// error.
	ConsoleInput io.Reader
	// Driver supplies the run's nondeterministic inputs. Default: a
	// LiveDriver reading ConsoleInput.
	Driver Driver
	// Clock is the only time source of the device models. Default: the
	// Driver's own clock if it has one (ClockDriver: a recorder logs every
	// reading, a replayer answers from its log), else a HostClock started
	// when the VM is created. A Clock other than the Driver's own is an
	// error: the run would not be recorded or replayed faithfully.
	Clock devices.Clock
	// TrackDirty turns on KVM's dirty-page log for guest RAM. It is on
	// whenever the Driver asks for it (DirtyLogDriver).
	TrackDirty bool
	// ExitTrace, if set, receives one line per synchronous exit and per
	// injection: the point, what happened, RIP and the general registers.
	// Two runs that should be identical (a recording and its replay) can
	// be compared line by line to find where they part (ftvm --trace).
	ExitTrace io.Writer
	// TraceMemory adds to each ExitTrace line a CRC-32C of guest memory
	// (page-table Accessed/Dirty bits left out). It reads all of guest
	// memory at every exit: a diagnostic for finding the first exit at
	// which two runs' memory differs, slow on large guests.
	TraceMemory bool
	// TraceMemoryFrom skips the memory CRC before this many exits.
	TraceMemoryFrom uint64
	// Warn, if set, receives warnings about the run, on the vCPU thread:
	// a guest that has made no synchronous exit for StallAfter (with its
	// RIP and interrupt state).
	Warn func(msg string)
	// HostTime is the host's time as the run accounts for it: RunTime,
	// the stall watch and Result.Duration. It never reaches the guest.
	// Default: time.Now; tests that model the guest move it themselves.
	HostTime func() time.Time
}

// ClockDriver is a Driver that owns the devices' clock: the VM must read
// time through it and nothing else.
type ClockDriver interface {
	Driver
	Clock() devices.Clock
}

// DirtyLogDriver is a Driver that needs KVM's dirty-page log
// (Machine.DirtyPages), such as a recorder taking landmarks.
type DirtyLogDriver interface {
	Driver
	NeedsDirtyLog() bool
}

// ErrInvalidConfig is wrapped by every error New returns for a Config
// that cannot work.
var ErrInvalidConfig = errors.New("invalid VM configuration")

// withDefaults checks c and fills in what its Driver implies.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.MemoryBytes < 2<<20 || c.MemoryBytes > MaxMemory || c.MemoryBytes%pageSize != 0:
		return bad("memory size %d bytes: must be a multiple of 4 KiB between 2 MiB and %d MiB", c.MemoryBytes, MaxMemory>>20)
	case c.ConsoleInput != nil && c.Driver != nil:
		return bad("ConsoleInput is read by the default driver only; give console input to the Driver (%T)", c.Driver)
	case c.TraceMemory && c.ExitTrace == nil:
		return bad("TraceMemory without ExitTrace")
	}
	if cd, ok := c.Driver.(ClockDriver); ok {
		own := cd.Clock()
		if c.Clock != nil && !sameClock(c.Clock, own) {
			return bad("Clock is not the Driver's own (%T): the devices would read time the driver never sees", c.Driver)
		}
		c.Clock = own
	}
	if dd, ok := c.Driver.(DirtyLogDriver); ok && dd.NeedsDirtyLog() {
		c.TrackDirty = true
	}
	if c.Console == nil {
		c.Console = io.Discard
	}
	return c, nil
}

// sameClock reports whether a and b are the same clock (false for clocks
// of types == cannot compare, such as funcs).
func sameClock(a, b devices.Clock) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta.Comparable() && a == b
}
