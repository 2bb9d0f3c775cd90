package ft

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/vmm"
)

func TestGuestVMConfig(t *testing.T) {
	var trace, console bytes.Buffer
	d := vmm.NewLiveDriver(nil)
	epoch := time.Unix(1_700_000_000, 0)
	g := Guest{Spec: vmm.Spec{MemoryBytes: 32 << 20}, Options: vmm.Options{ExitTrace: &trace}}
	c, err := g.vmConfig(epoch, &console, d)
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryBytes != 32<<20 || !c.Epoch.Equal(epoch) || c.ExitTrace != &trace || c.Console != &console || c.Driver != d {
		t.Errorf("vmConfig = %+v", c)
	}
	g.Options.Console = &console
	if _, err := g.vmConfig(epoch, &console, d); !errors.Is(err, vmm.ErrInvalidConfig) {
		t.Errorf("a Guest setting the console: err = %v, want ErrInvalidConfig", err)
	}
}

// The default factory needs the Guest's Load and Header; a Config with a
// NewMachine uses that instead.
func TestMachineFactory(t *testing.T) {
	var c Config
	if _, _, err := c.machine(vmm.Config{}); err == nil || !strings.Contains(err.Error(), "Guest.Load and Guest.Header") {
		t.Errorf("no Load: err = %v", err)
	}
	g := &toyGuest{prog: chatterProg(1)}
	c.NewMachine = g.factory
	m, hdr, err := c.machine(vmm.Config{Spec: vmm.Spec{Epoch: time.Unix(5, 0)}})
	if err != nil || m == nil || hdr.EpochUnixNano != 5e9 {
		t.Errorf("NewMachine: %v, %v, %v", m, hdr, err)
	}
}
