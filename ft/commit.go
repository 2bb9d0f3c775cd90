package ft

import (
	"fmt"
	"time"
)

// outputCommit is the primary's output-commit rule as a pure core: console
// output logged in log entry N may leave the machine only once the backup
// has acknowledged entry N. The channel's acks are cumulative, so one ack
// releases everything logged up to it. It does no IO, starts no goroutine
// and reads no clock: the times of a write and of a release are inputs,
// used only for the commit-delay figures.
//
// The release loop drives it under a mutex:
//
//  1. hold(entry, data, at) for each console write, after logging it in
//     entry, with released (read before logging) as the count the log
//     carries;
//  2. appended(seq) as entries reach the channel, acked(seq) as acks come,
//     setPolicy as the pair's state changes;
//  3. next(now) says what to do: write a batch out (then call written:
//     only then do its bytes count as released, so a Released count in the
//     log never covers bytes that might not have left), wait for an ack,
//     or nothing until an input changes;
//  4. close once nothing more will be held or appended; finished then
//     reports when the loop may stop.
//
// Invariants: held is in write order and its entries never decrease;
// heldBytes is the sum of its lengths; acked and released never decrease;
// at most one batch is out (between next and written) and it is the oldest
// output not yet released; released counts only confirmed bytes.
type outputCommit struct {
	policy    protection
	held      []heldOutput
	heldBytes int
	appended  uint64 // every log entry up to here is in the channel
	acked     uint64 // the backup acknowledged every entry up to here
	released  uint64 // bytes written out and confirmed
	dropped   uint64 // bytes dropped on halting
	out       int    // bytes in the batch being written
	outBusy   bool   // a batch is being written
	acksOver  bool   // waiting for an ack can no longer succeed
	closed    bool   // nothing more will be held or appended
	delays    []time.Duration
	recent    rolling // the latest delays, for the status's percentiles
	// The delay's parts, for released output whose append and ack times
	// were noted (noteAppended, noteAcked): guest write to the channel,
	// channel to the backup's ack as the release loop saw it.
	toChannel, toAck []time.Duration
	// nApp, nAck: how many of held (a prefix, since entries are in
	// order) have their append, ack time noted.
	nApp, nAck int
}

// heldOutput is console output waiting for the ack of the log entry it was
// logged in.
type heldOutput struct {
	entry uint64 // channel seq of its Output event
	data  []byte
	at    time.Time
	// appended, acked: when its entry reached the channel and when its
	// ack was seen (zero: not noted).
	appended, acked time.Time
}

// commitAction is what the release loop must do next.
type commitAction int

const (
	commitIdle     commitAction = iota // nothing until an input changes
	commitRelease                      // write data out, then call written
	commitDrop                         // dropped bytes were discarded (halted)
	commitWaitAck                      // wait until the backup acknowledges entry, then call acked
	commitUnlogged                     // held output's entry never reached the channel and never will: it cannot be released
)

// commitStep is next's decision.
type commitStep struct {
	action  commitAction
	data    []byte // commitRelease: the bytes, in order
	dropped int    // commitDrop: how many bytes
	entry   uint64 // commitWaitAck, commitUnlogged: the entry concerned
}

// hold queues data, written by the guest at at and logged in entry. It
// copies data.
func (c *outputCommit) hold(entry uint64, data []byte, at time.Time) error {
	if c.closed {
		return fmt.Errorf("ft: output logged in entry %d after the output queue closed", entry)
	}
	if n := len(c.held); n > 0 && entry < c.held[n-1].entry {
		return fmt.Errorf("ft: output logged in entry %d after output logged in entry %d", entry, c.held[n-1].entry)
	}
	it := heldOutput{entry: entry, data: append([]byte(nil), data...), at: at}
	// Its entry may be in the channel, even acknowledged, already.
	if c.nApp == len(c.held) && entry <= c.appended {
		it.appended = at
		c.nApp++
		if c.nAck == len(c.held) && entry <= c.acked {
			it.acked = at
			c.nAck++
		}
	}
	c.held = append(c.held, it)
	c.heldBytes += len(data)
	return nil
}

// appendedTo notes that the channel has every entry up to seq.
func (c *outputCommit) appendedTo(seq uint64) { c.appended = max(c.appended, seq) }

// ackedTo notes the backup's cumulative ack.
func (c *outputCommit) ackedTo(seq uint64) { c.acked = max(c.acked, seq) }

// noteAppended and noteAcked stamp the held output logged up to seq with
// the time its entry reached the channel, or its ack was seen, for the
// breakdown of the commit delay. They change no decision.
func (c *outputCommit) noteAppended(seq uint64, now time.Time) {
	for c.nApp < len(c.held) && c.held[c.nApp].entry <= seq {
		c.held[c.nApp].appended = now
		c.nApp++
	}
}

func (c *outputCommit) noteAcked(seq uint64, now time.Time) {
	for c.nAck < len(c.held) && c.held[c.nAck].entry <= seq {
		c.held[c.nAck].acked = now
		c.nAck++
	}
}

// stopAcks notes that waiting for an ack can no longer succeed (the wait
// failed for good): output stays held until the policy changes.
func (c *outputCommit) stopAcks() { c.acksOver = true }

// setPolicy changes what happens to held output.
func (c *outputCommit) setPolicy(p protection) { c.policy = p }

// close notes that no more output will be held and no more entries
// appended.
func (c *outputCommit) close() { c.closed = true }

// finished reports whether closed and every held byte is released or
// dropped.
func (c *outputCommit) finished() bool { return c.closed && len(c.held) == 0 && !c.outBusy }

// next decides what to do now. now stamps the commit delays of released
// output.
func (c *outputCommit) next(now time.Time) commitStep {
	if c.outBusy || len(c.held) == 0 {
		return commitStep{}
	}
	n := len(c.held) // how many to release
	switch c.policy {
	case halted:
		// The backup, if it went live, re-sends them: it re-sends from the
		// last Released count it replayed, which never covers held bytes.
		size := c.heldBytes
		c.held, c.heldBytes = nil, 0
		c.dropped += uint64(size)
		return commitStep{action: commitDrop, dropped: size}
	case protected:
		n = 0
		for n < len(c.held) && c.held[n].entry <= c.acked {
			n++
		}
		if n == 0 {
			first := c.held[0].entry
			switch {
			case first <= c.appended && !c.acksOver:
				return commitStep{action: commitWaitAck, entry: first}
			case first > c.appended && c.closed && !c.acksOver:
				return commitStep{action: commitUnlogged, entry: first}
			}
			return commitStep{}
		}
	}
	items := c.held[:n]
	size := 0
	for _, it := range items {
		size += len(it.data)
	}
	data := make([]byte, 0, size)
	for _, it := range items {
		data = append(data, it.data...)
		c.delays = append(c.delays, now.Sub(it.at))
		c.recent.add(now.Sub(it.at))
		if !it.appended.IsZero() && !it.acked.IsZero() {
			c.toChannel = append(c.toChannel, it.appended.Sub(it.at))
			c.toAck = append(c.toAck, it.acked.Sub(it.appended))
		}
	}
	c.held = c.held[n:]
	c.nApp, c.nAck = max(0, c.nApp-n), max(0, c.nAck-n)
	if len(c.held) == 0 {
		c.held = nil
	}
	c.heldBytes -= size
	c.out, c.outBusy = size, true
	return commitStep{action: commitRelease, data: data}
}

// written confirms that the batch next returned was written out.
func (c *outputCommit) written() {
	if !c.outBusy {
		return
	}
	c.released += uint64(c.out)
	c.out, c.outBusy = 0, false
}
