package suite_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/suite"
)

// The Example boots guests: it runs where /dev/kvm works (make test's KVM
// stage) and is left out where it does not.
func TestMain(m *testing.M) { os.Exit(kvmtest.RunExamples(m, "ExampleCheck")) }

// Run the suite's record/replay/divergence checks on a guest of your own:
// here the pit_read bare guest, which prints "pit_read: sum=" once done.
func ExampleCheck() {
	img, err := bare.Build("pit_read") // or os.ReadFile your own flat image
	if err != nil {
		log.Fatal(err)
	}
	guest, err := replay.PrepareBare(img.Binary) // or replay.PrepareLinux
	if err != nil {
		log.Fatal(err)
	}
	rep, err := suite.Check(context.Background(), suite.Guest{Prepared: guest, Want: []string{"pit_read: sum="}})
	if err != nil {
		log.Fatalf("seed %d: %v", rep.Seed, err)
	}
	fmt.Println("replays reached the recorded state")
	fmt.Println("a tampered log diverged:", rep.Tampered != "")
	fmt.Println("a reordered log diverged:", rep.Reordered != "")
	// Output:
	// replays reached the recorded state
	// a tampered log diverged: true
	// a reordered log diverged: true
}
