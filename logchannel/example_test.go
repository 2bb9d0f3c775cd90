package logchannel_test

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/ftkvm/ftkvm/logchannel"
)

// A primary logs three events and releases an output only once the backup
// has acknowledged the event it depends on.
func Example() {
	ctx := context.Background()
	cfg := logchannel.Config{ConfigHash: sha256.Sum256([]byte("vm config: 1 vCPU, 64 MiB, PIC, PIT, UART"))}
	primaryEnd, backupEnd := logchannel.NewPipe(0)

	backup := make(chan *logchannel.Receiver)
	go func() {
		r, err := logchannel.NewReceiver(ctx, backupEnd, cfg)
		if err != nil {
			panic(err)
		}
		backup <- r
	}()
	s, err := logchannel.NewSender(ctx, primaryEnd, cfg)
	if err != nil {
		panic(err)
	}
	r := <-backup

	var last uint64
	for _, ev := range []string{"rdtsc 1000", "pio 0x3fd -> 0x60", "irq 4 at landmark 17"} {
		last, _ = s.Append(ctx, []byte(ev))
	}
	if err := s.WaitAcked(ctx, last); err == nil {
		fmt.Println("backup has everything up to", last, "- the output may leave")
	}
	for i := 0; i < 3; i++ {
		seq, entry, _ := r.Next(ctx)
		fmt.Printf("backup replays %d: %s\n", seq, entry)
		r.Consumed(seq)
	}
	s.Close()
	_, _, err = r.Next(ctx)
	fmt.Println("then:", err)
	r.Close()
	// Output:
	// backup has everything up to 3 - the output may leave
	// backup replays 1: rdtsc 1000
	// backup replays 2: pio 0x3fd -> 0x60
	// backup replays 3: irq 4 at landmark 17
	// then: EOF
}
