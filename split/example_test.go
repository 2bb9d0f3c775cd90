package split_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ftkvm/ftkvm/split"
)

// The primary and the backup lose sight of each other and both race for
// the pair; the backup gets there first. Later the live node starts a new
// generation for its new backup.
func ExampleFileArbiter() {
	dir, err := os.MkdirTemp("", "split-example") // shared storage, e.g. an NFS mount
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	arbiter := func(node string) *split.FileArbiter {
		a, err := split.NewFileArbiter(split.FileConfig{Dir: dir, Pair: "vm1", Node: node, Generation: 1})
		if err != nil {
			panic(err)
		}
		return a
	}
	primary, backup := arbiter("hostA"), arbiter("hostB")

	if err := backup.TestAndSet(ctx); err == nil {
		fmt.Println("hostB: won, going live")
	}
	var lost *split.LostError
	if err := primary.TestAndSet(ctx); errors.As(err, &lost) {
		fmt.Printf("hostA: halting, generation %d belongs to %s\n", lost.Winner.Generation, lost.Winner.Owner)
	}

	next, err := backup.Advance(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("hostB: new backup joins at generation", next)
	// Output:
	// hostB: won, going live
	// hostA: halting, generation 1 belongs to hostB
	// hostB: new backup joins at generation 2
}
