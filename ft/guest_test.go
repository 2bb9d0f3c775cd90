package ft

import (
	"bytes"
	"errors"
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
