package ft

import "fmt"

// resendLog is the backup's half of output commit as a pure core: it keeps
// the console output the guest writes during the replay that the outside
// world may not have seen, and says what a backup going live must send. It
// does no IO and reads no clock.
//
// The rule is "duplicates allowed, losses not". The primary logs each
// console write with Released, the count of bytes it had let out before
// (outputCommit counts a byte only once it is written out), and lets a byte
// out only after the backup acknowledged the entry it was logged in. So
// when the backup has replayed every entry it received, it has written
// every byte the outside world may have seen, and every byte from the last
// Released count it replayed on may not have been seen: re-sending from
// there loses nothing. Bytes the primary let out after logging that count
// are sent twice.
//
// The backup drives it on the vCPU thread: replayed for each console write
// during the replay (with the Released count of the log's Output event),
// goLive once it has won the pair, wrote for bytes it then writes out.
//
// Invariants: buf holds the console bytes from offset base to the end of
// what the guest wrote; base <= released <= base+len(buf) while the counts
// are consistent (the first inconsistency is kept in err and buf is kept
// whole from then on).
type resendLog struct {
	buf      []byte
	base     uint64 // console offset of buf[0]
	released uint64 // the last Released count replayed
	live     bool
	sent     uint64 // bytes this side wrote out (from going live)
	err      error  // the first inconsistent Released count
}

// end is the console offset after the last byte the guest wrote.
func (r *resendLog) end() uint64 { return r.base + uint64(len(r.buf)) }

// replayed records data, written by the guest during the replay at a point
// whose Output event carried released (the last count replayed, if the
// write has no event of its own). The bytes below released are dropped.
func (r *resendLog) replayed(data []byte, released uint64) error {
	if r.live {
		return fmt.Errorf("ft: replayed output after going live")
	}
	if r.err == nil {
		switch {
		case released < r.released:
			r.err = fmt.Errorf("the primary's released count went back from %d to %d", r.released, released)
		case released > r.end():
			// Released is read before the write is logged: it cannot
			// cover the write itself.
			r.err = fmt.Errorf("the primary's released count %d is beyond the %d console bytes the guest wrote before", released, r.end())
		default:
			r.released = released
		}
	}
	r.buf = append(r.buf, data...)
	if r.err == nil && r.released > r.base {
		cut := r.released - r.base
		r.buf = r.buf[cut:]
		r.base += cut
		if len(r.buf) == 0 {
			r.buf = nil // let the array go
		}
	}
	return r.err
}

// check returns the first inconsistency in the Released counts: a backup
// that has one cannot tell what to re-send and must not go live.
func (r *resendLog) check() error {
	if r.err != nil {
		return fmt.Errorf("the log's output counts are inconsistent: %w", r.err)
	}
	return nil
}

// goLive returns the bytes to send now, from console offset from: all the
// guest wrote from the last Released count replayed. From then on every
// write goes out directly.
func (r *resendLog) goLive() (from uint64, tail []byte, err error) {
	if err := r.check(); err != nil {
		return 0, nil, err
	}
	if r.live {
		return r.end(), nil, nil
	}
	r.live = true
	from, tail = r.released, r.buf[r.released-r.base:]
	r.base, r.buf = r.end(), nil
	return from, tail, nil
}

// wrote counts n bytes written out by this side.
func (r *resendLog) wrote(n int) { r.sent += uint64(n) }
