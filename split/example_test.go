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

// Wiring the etcd arbiter where a pair takes an arbiter constructor (as
// ft.Config.NewArbiter does), with a halt when the live node loses its
// lease.
func ExampleOpen() {
	newArbiter, err := split.Open("etcd://etcd1:2379,etcd2:2379,etcd3:2379", split.EtcdConfig{
		Pair: "vm1", Node: "hostA",
		CAFile: "/etc/ftkvm/etcd-ca.pem", CertFile: "/etc/ftkvm/etcd-client.pem", KeyFile: "/etc/ftkvm/etcd-client-key.pem",
		OnLost: func(err error) {
			// Cut from the etcd majority while live: stop before anyone
			// may take the VM elsewhere, releasing no more output.
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	a, err := newArbiter(1) // the generation from the pair's handshake
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	_ = a // a.TestAndSet(ctx) when the peer is declared dead, as with FileArbiter
}
