package ft_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
)

// The Example boots guests: it runs where /dev/kvm works (make test's KVM
// stage) and is left out where it does not.
func TestMain(m *testing.M) { os.Exit(kvmtest.RunExamples(m, "Example")) }

// Example embeds an FT pair in a VMM: both sides describe the same guest
// (ft.BareGuest: a flat image with its rdtsc sites patched, here the
// "hello" bare test guest; ft.LinuxGuest reads a kernel and initrd) and
// run it, the backup dialling the primary, over mutual TLS with
// certificates from package pairtls. In a deployment the two sides run
// on two hosts and SplitDir is storage both mount; here they share one
// process and loopback. The primary's console output is released only
// once the backup has acknowledged the log up to it.
func Example() {
	img, err := bare.Build("hello")
	if err != nil {
		log.Fatal(err)
	}
	guest, err := ft.BareGuest(img.Binary)
	if err != nil {
		log.Fatal(err)
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
	fmt.Printf("primary: %s, guest status %d, %d console bytes released\n", res.Outcome, res.Run.Status, res.Released)
	fmt.Printf("backup: %s\n", bres.Outcome)
	// Output:
	// hello from a bare guest
	// string I/O works
	// primary: finished protected, guest status 42, 41 console bytes released
	// backup: finished as backup (the primary completed the run)
}
