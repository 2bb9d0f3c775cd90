package ft

import (
	"fmt"
	"time"
)

// The output-commit rule and the backup's re-send, with the pure cores
// driven by hand as primary.go and backup.go drive them: output logged in
// entry N leaves only once the backup has acknowledged entry N, and a
// backup that goes live re-sends from the last Released count it
// replayed, so a byte may be sent twice but never lost.
func Example_outputCommit() {
	var primary outputCommit
	t := time.Unix(0, 0)
	show := func(st commitStep) {
		switch st.action {
		case commitRelease:
			fmt.Printf("primary: release %q\n", st.data)
		case commitWaitAck:
			fmt.Printf("primary: wait for the ack of entry %d\n", st.entry)
		default:
			fmt.Println("primary: nothing to do")
		}
	}

	// The guest writes "one;" (logged in entry 2 with Released 0) and
	// "two;" (entry 4, Released 0); the pump appends up to entry 4.
	primary.hold(2, []byte("one;"), t)
	primary.hold(4, []byte("two;"), t)
	primary.appendedTo(4)
	show(primary.next(t))
	primary.ackedTo(3) // the backup acknowledges entries 1-3
	show(primary.next(t))
	primary.written() // the release loop wrote "one;" out
	show(primary.next(t))

	// The guest writes "three;" in entry 5, logged with Released 4. The
	// primary dies before the backup acknowledges entry 4; the backup had
	// received up to entry 5 and replays all of it.
	primary.hold(5, []byte("three;"), t)
	var backup resendLog
	backup.replayed([]byte("one;"), 0)
	backup.replayed([]byte("two;"), 0)
	backup.replayed([]byte("three;"), primary.released)
	from, tail, _ := backup.goLive()
	fmt.Printf("backup, live: re-send %q from byte %d\n", tail, from)
	// Output:
	// primary: wait for the ack of entry 2
	// primary: release "one;"
	// primary: wait for the ack of entry 4
	// backup, live: re-send "two;three;" from byte 4
}
