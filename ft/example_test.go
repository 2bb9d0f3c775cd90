package ft_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// Example embeds an FT pair in a VMM: both sides describe the same guest
// with an ft.Guest (here a flat bare image, the "chatter" test guest,
// with its rdtsc sites patched so that every TSC read exits, as ftvm
// does) and run it, the backup dialling the primary, over mutual TLS with
// certificates from package pairtls. In a deployment the two sides run on
// two hosts and SplitDir is storage both mount; here they share one
// process and loopback.
//
// It needs /dev/kvm (and gcc, to build the guest), so it has no Output
// line: go test compiles it but does not run it. TestPairInProcess runs
// the same pair inside an emulated KVM host.
func Example() {
	path, err := ftguest.Build(os.TempDir(), ftguest.Spec{Lines: 20, Spin: 1000})
	if err != nil {
		log.Fatal(err)
	}
	image, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	prep, err := tscpatch.PrepareFlat(image, vmm.BareLoadAddr)
	if err != nil {
		log.Fatal(err)
	}
	guest := ft.Guest{
		Spec: vmm.Spec{MemoryBytes: 64 << 20, TSCSites: prep.Table},
		Load: func(vm *vmm.VM) error { return vm.LoadBare(prep.Image) },
		Header: func(vm *vmm.VM, epoch time.Time) *logpb.Header {
			return replay.NewHeader(vm, replay.Guest{Bare: true, Kernel: prep.Image, RDTSCSites: len(prep.Sites)}, epoch, false)
		},
		Bare: true,
	}
	shared, err := os.MkdirTemp("", "ft-split")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(shared)
	// The pair's certificates: a CA of its own and one certificate per
	// node (what `ftvm certs DIR` writes). On two hosts each would hold
	// ca.pem and its own certificate and key only.
	certs, err := os.MkdirTemp("", "ft-certs")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(certs)
	if _, err := pairtls.Generate(certs, pairtls.Options{}); err != nil {
		log.Fatal(err)
	}
	primaryTLS, err := pairtls.Primary(certs)
	if err != nil {
		log.Fatal(err)
	}
	backupTLS, err := pairtls.Backup(certs)
	if err != nil {
		log.Fatal(err)
	}
	cfg := ft.Config{Guest: guest, SplitDir: shared, StatusEvery: -1, TLS: primaryTLS}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	backupDone := make(chan ft.Result)
	go func() {
		bcfg := cfg
		bcfg.TLS = backupTLS
		bcfg.Output = os.Stderr // prints only if the backup goes live
		res, err := ft.RunBackup(ctx, bcfg, l.Addr().String(), 10*time.Second)
		if err != nil {
			log.Print("backup: ", err)
		}
		backupDone <- res
	}()
	res, err := ft.RunPrimary(ctx, cfg, l, 10*time.Second) // the guest's output goes to os.Stdout
	if err != nil {
		log.Fatal("primary: ", err)
	}
	bres := <-backupDone
	fmt.Printf("primary: %s, %d console bytes released\n", res.Outcome, res.Released)
	fmt.Printf("backup: %s\n", bres.Outcome)
}
