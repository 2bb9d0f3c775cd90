package vmm_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/vmm"
)

// kickChecker is a driver that, at every kick, checks the memloop guest's
// invariant: the counter in memory is RAX or RAX-1.
type kickChecker struct {
	vmm.LiveDriver
	t        *testing.T
	addr     uint64
	kicks    int
	bad      int
	firstBad string
}

func (k *kickChecker) Deliver(vm vmm.Machine, p vmm.Point) (bool, error) {
	if p.Kind == vmm.Kicked {
		regs, err := vm.Regs()
		if err != nil {
			return false, err
		}
		page, err := vm.PageContents(uint32(k.addr / 4096))
		if err != nil {
			return false, err
		}
		c := binary.LittleEndian.Uint64(page[k.addr%4096:]) // the counter is 8-aligned
		k.kicks++
		if c != regs.RAX && c != regs.RAX-1 && regs.RAX != 0 {
			if k.bad == 0 {
				k.firstBad = "RIP " + hex(regs.RIP) + " RAX " + hex(regs.RAX) + " counter " + hex(c)
			}
			k.bad++
		}
	}
	return false, nil
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }

// TestKickStateIsConsistent kicks a guest that keeps a register and a
// memory word in lockstep, and checks at every kick that the registers KVM
// reports and guest memory describe the same instruction boundary. Replay
// landmarks depend on it.
func TestKickStateIsConsistent(t *testing.T) {
	requireKVM(t)
	img, err := bare.Build("memloop")
	if err != nil {
		t.Fatal(err)
	}
	kc := &kickChecker{t: t, addr: img.Symbols["counter"]}
	vm, err := vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: 16 << 20}, Options: vmm.Options{Driver: kc}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.LoadBare(img.Binary); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				vm.Kick()
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v after %v, %d kicks checked", res.Reason, res.Duration, kc.kicks)
	if kc.kicks < 10 {
		t.Fatalf("only %d kicks landed", kc.kicks)
	}
	if kc.bad > 0 {
		t.Errorf("%d of %d kicks saw memory and registers from different instruction boundaries; first: %s", kc.bad, kc.kicks, kc.firstBad)
	}
}
