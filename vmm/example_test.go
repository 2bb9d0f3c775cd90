package vmm_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"github.com/ftkvm/ftkvm/vmm"
)

// The Examples boot guests: they run where /dev/kvm works (make test's
// KVM stage) and are left out where it does not.
func TestMain(m *testing.M) { os.Exit(kvmtest.RunExamples(m, "Example", "ExampleVM_Fingerprint")) }

// Boot a bare guest and run it to its end: a flat image loaded at
// vmm.BareLoadAddr, its serial console on os.Stdout, driven live (no
// recording). The guest writes its status to vmm.ExitPort.
func Example() {
	img, err := bare.Build("hello") // or os.ReadFile a flat image of your own
	if err != nil {
		log.Fatal(err)
	}
	vm, err := vmm.New(vmm.Config{
		Spec:    vmm.Spec{MemoryBytes: 16 << 20},
		Options: vmm.Options{Console: os.Stdout},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer vm.Close()
	if err := vm.LoadBare(img.Binary); err != nil {
		log.Fatal(err)
	}
	res, err := vm.Run(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stopped at the", res.Reason, "with status", res.Status)
	// Output:
	// hello from a bare guest
	// string I/O works
	// stopped at the exit port with status 42
}

// Two VMs that run the same deterministic guest from the same image end
// in the same state: their fingerprints (registers and every page of
// memory) are equal. A replay is checked this way against its recording.
func ExampleVM_Fingerprint() {
	img, err := bare.Build("hello")
	if err != nil {
		log.Fatal(err)
	}
	run := func() [32]byte {
		vm, err := vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: 16 << 20}})
		if err != nil {
			log.Fatal(err)
		}
		defer vm.Close()
		if err := vm.LoadBare(img.Binary); err != nil {
			log.Fatal(err)
		}
		if _, err := vm.Run(context.Background()); err != nil {
			log.Fatal(err)
		}
		fp, err := vm.Fingerprint()
		if err != nil {
			log.Fatal(err)
		}
		return fp
	}
	fmt.Println("same end state:", run() == run())
	// Output:
	// same end state: true
}
