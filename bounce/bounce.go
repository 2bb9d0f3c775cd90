// Package bounce moves device data into guest memory only through bounce
// buffers, so that DMA is a logged, replayable event (DESIGN.md, rule 3).
//
// A device model submits a Request on the vCPU thread. In a live run the
// Engine hands it to the Backend on a goroutine of its own, which fills a
// fresh buffer (reading a disk, receiving a packet...) while the guest runs
// on; guest memory is never touched from that goroutine. When the buffer is
// ready the Engine calls its notify hook (the VMM's driver kicks the vCPU)
// and the completion waits in the Engine until the driver polls it at a
// delivery point. There, on the vCPU thread, the driver hands it to the
// device model, which copies the buffer into guest memory and raises its
// interrupt. A recorder logs the completion (tag and bytes) at that point; a
// replayer delivers the logged completion at the same point and the Engine,
// in replay mode, never calls the Backend.
//
// # Reads and writes
//
// A request is a read (device data into the guest, the case above) or, with
// Request.Write, a write: outbound data the device model gathered from guest
// memory on the vCPU thread, carried in Request.Data, for the backend to
// store (a disk write). A write's backend returns no data, and its
// completion carries only the tag and the backend's error, so the log
// format is the same for both: (tag, data, error) with no data for a write.
// A write with no data (Len 0) is a barrier whose meaning the device model
// defines; virtio-blk uses it for a flush.
//
// # Reads of up to Len bytes, and ordered requests
//
// A read with Request.Upto accepts any length from 1 to Len: the backend
// returns what it got (a received network packet) and the device model
// learns the length from the completion, whose data the log records as
// bytes like any other. Without Upto a read must return exactly Len bytes.
//
// The Engine runs requests concurrently, each on its own goroutine, so the
// backend may serve them in any order. Requests with Request.Ordered are
// the exception: each reaches the backend only after the previous ordered
// request of the same Engine has returned, so they are served, and become
// ready, in the order submitted (SetLive starts the outstanding ones in tag
// order, which a device whose tags follow its submissions keeps).
// virtio-net's transmitted frames are ordered: a network must see them in
// the order the guest queued them. Unordered requests never wait for
// ordered ones, nor the reverse.
//
// Writes are the guest's outputs: a VMM that must hold outputs until a
// backup has the log up to them (output commit), or must not perform them
// at all on a backup sharing the disk, finds them as Requests with Write
// set. In replay mode the Engine performs no write, as it performs no read;
// SetLive starts the ones the log did not complete, with their data.
//
// # Snapshots
//
// A VM snapshot quiesces the engine rather than recording what to do
// again: Quiesce waits for every transfer that ends on its own (a disk's),
// and Save keeps their completions, data included, to be delivered after
// Restore exactly as they would have been. Only a read with Upto (a
// network receive) may wait on the outside world for ever: it is saved as
// a request and started again by Restore, which to the device is the same
// receive still waiting. The devices' own saved state lists the same tags
// in flight, and they are restored without re-submitting (State).
package bounce

import (
	"fmt"
	"slices"
	"sync"
)

// MaxLen bounds one transfer: a guest cannot make the VMM allocate more.
const MaxLen = 1 << 20

// Request is one transfer. A read (Write false) asks the backend for Len
// bytes, 1..MaxLen, and has no Data; with Upto, for 1 to Len bytes. A
// write hands the backend Len bytes of Data (len(Data) == Len, 0..MaxLen)
// and gets none back; the Engine owns Data from Submit on, and the caller
// must not change it.
//
// Tag identifies the transfer to the device model, and Arg is the device's
// argument to its backend (virtio-blk: the byte offset on the disk); the
// Engine interprets neither. Ordered requests reach the backend one at a
// time, in submission order (see the package documentation).
type Request struct {
	Tag     uint64
	Len     int
	Arg     uint64
	Write   bool
	Data    []byte
	Upto    bool // a read: any length 1..Len is a success
	Ordered bool

	// hold, set by Submit from the engine's gate, runs on the request's
	// goroutine before the backend; an error stops the request there.
	hold func() error
}

// Completion is a transfer's end. For a read it is the filled bounce buffer
// (exactly the request's Len bytes; with Upto, 1 to Len bytes) or the
// backend's error (Data nil); for a write, Data is always nil and Err says
// whether the backend failed.
type Completion struct {
	Tag  uint64
	Data []byte
	Err  string
}

// Backend performs a request: for a read it returns a fresh buffer of
// req.Len bytes (with req.Upto, 1 to req.Len bytes), for a write it stores
// req.Data and returns no data. It runs on its own goroutine, several may
// run at once (ordered requests one at a time), and it must not touch
// guest memory.
type Backend func(Request) ([]byte, error)

// Engine stages transfers between a backend and the vCPU thread.
type Engine struct {
	backend Backend

	mu        sync.Mutex
	ready     []Completion
	notify    func()
	replaying bool
	inflight  int
	// running: the requests started on the backend and not yet ready,
	// by tag (Save re-issues the ones Quiesce does not wait for).
	running map[uint64]Request
	// outstanding: requests submitted in replay mode whose completion has
	// not been delivered yet (SetLive starts them).
	outstanding map[uint64]Request
	// lastOrdered is closed when the last ordered request started has
	// become ready; the next one waits for it.
	lastOrdered chan struct{}
	// gate, if set, is asked about every write submitted (see SetGate).
	gate func(Request) func() error
	// replayWrites, if set, picks the writes a replaying engine performs
	// (SetReplayWrites); shadows are those writes, by tag, until the log
	// delivers their completion; lastShadow orders them.
	replayWrites func(Request) bool
	shadows      map[uint64]*shadow
	lastShadow   chan struct{}
	shadowErr    error // the first replayed write that failed (ShadowErr)
}

// shadow is a write a replaying engine performs on its own backend (a
// backup with its own copy of the disk) while the log carries the
// primary's completion.
type shadow struct {
	done chan struct{} // closed when c is set
	c    Completion
}

// NewEngine returns an engine feeding completions from backend.
func NewEngine(backend Backend) *Engine { return &Engine{backend: backend} }

// SetNotify sets the hook called (from the backend's goroutine) when a
// completion becomes ready. The live driver sets it to its kick.
func (e *Engine) SetNotify(f func()) {
	e.mu.Lock()
	e.notify = f
	e.mu.Unlock()
}

// SetGate sets the hook that holds the guest's outputs (output commit).
// Submit calls gate, on the submitting (vCPU) thread, for every write it
// accepts, live or in replay mode; a recorder logs the submission there.
// The function gate returns, if not nil, runs on the request's goroutine
// before the backend is called (after the previous ordered request, for
// an ordered one): it may block until the write may leave (an FT primary
// waits for the backup's ack of the submission's log entry), and if it
// returns an error the backend is not called and the completion carries
// that error. Requests SetLive starts are not gated again.
func (e *Engine) SetGate(gate func(Request) func() error) {
	e.mu.Lock()
	e.gate = gate
	e.mu.Unlock()
}

// SetReplay puts the engine in replay mode: Submit no longer calls the
// backend; completions come from the log.
func (e *Engine) SetReplay() {
	e.mu.Lock()
	e.replaying = true
	e.mu.Unlock()
}

// SetReplayWrites makes a replaying engine perform the writes for which
// perform returns true, on the backend, one at a time in submission order
// (a backup with its own copy of a disk executes the guest's disk writes;
// its reads still come from the log). The log still delivers the
// primary's completions; the engine's own result is used only by SetLive,
// for a write the log did not complete, instead of performing it again.
func (e *Engine) SetReplayWrites(perform func(Request) bool) {
	e.mu.Lock()
	e.replayWrites = perform
	e.mu.Unlock()
}

// Submit starts a transfer. It returns an error, and starts nothing, for a
// request that breaks Request's rules: a read of a length outside
// 1..MaxLen or with Data, a write longer than MaxLen, whose Data is not
// Len bytes, or with Upto.
func (e *Engine) Submit(req Request) error {
	if err := req.check(); err != nil {
		return err
	}
	e.mu.Lock()
	gate := e.gate
	e.mu.Unlock()
	req.hold = nil
	if gate != nil && req.Write {
		// Outside the lock: the gate may log, and logging may wait.
		req.hold = gate(req)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.replaying {
		req.hold = nil
		if e.outstanding == nil {
			e.outstanding = map[uint64]Request{}
		}
		e.outstanding[req.Tag] = req
		if req.Write && e.replayWrites != nil && e.replayWrites(req) {
			e.startShadow(req)
		}
		return nil
	}
	e.start(req)
	return nil
}

func (r Request) check() error {
	switch {
	case r.Write && (r.Len < 0 || r.Len > MaxLen):
		return fmt.Errorf("bounce: write of %d bytes: must be 0..%d", r.Len, MaxLen)
	case r.Write && len(r.Data) != r.Len:
		return fmt.Errorf("bounce: write of %d bytes carries %d bytes of data", r.Len, len(r.Data))
	case r.Write && r.Upto:
		return fmt.Errorf("bounce: write of %d bytes with Upto (reads only)", r.Len)
	case !r.Write && (r.Len <= 0 || r.Len > MaxLen):
		return fmt.Errorf("bounce: transfer of %d bytes: must be 1..%d", r.Len, MaxLen)
	case !r.Write && r.Data != nil:
		return fmt.Errorf("bounce: read of %d bytes carries data", r.Len)
	}
	return nil
}

// complete turns the backend's answer to req into its completion.
func complete(req Request, data []byte, err error) Completion {
	c := Completion{Tag: req.Tag}
	switch {
	case err != nil:
		c.Err = err.Error()
	case req.Write && len(data) != 0:
		c.Err = fmt.Sprintf("backend returned %d bytes for a write", len(data))
	case req.Upto && (len(data) == 0 || len(data) > req.Len):
		c.Err = fmt.Sprintf("backend returned %d bytes for a transfer of up to %d bytes", len(data), req.Len)
	case !req.Write && !req.Upto && len(data) != req.Len:
		c.Err = fmt.Sprintf("backend returned %d bytes for a %d-byte transfer", len(data), req.Len)
	case !req.Write:
		c.Data = data
	}
	return c
}

// start runs the backend for req; e.mu is held. An ordered request first
// waits for the previous one to be ready.
func (e *Engine) start(req Request) {
	e.inflight++
	if e.running == nil {
		e.running = map[uint64]Request{}
	}
	e.running[req.Tag] = req
	var prev, done chan struct{}
	if req.Ordered {
		prev, done = e.lastOrdered, make(chan struct{})
		e.lastOrdered = done
	}
	go func() {
		if prev != nil {
			<-prev
		}
		if done != nil {
			defer close(done)
		}
		var data []byte
		var err error
		if req.hold != nil {
			err = req.hold()
		}
		if err == nil {
			data, err = e.backend(req)
		}
		c := complete(req, data, err)
		e.mu.Lock()
		e.ready = append(e.ready, c)
		e.inflight--
		delete(e.running, req.Tag)
		notify := e.notify
		e.mu.Unlock()
		if notify != nil {
			notify()
		}
	}()
}

// startShadow performs a replayed write on the backend, after the
// previous one; e.mu is held.
func (e *Engine) startShadow(req Request) {
	if e.shadows == nil {
		e.shadows = map[uint64]*shadow{}
	}
	sh := &shadow{done: make(chan struct{})}
	e.shadows[req.Tag] = sh
	prev := e.lastShadow
	e.lastShadow = sh.done
	go func() {
		if prev != nil {
			<-prev
		}
		data, err := e.backend(req)
		sh.c = complete(req, data, err)
		if sh.c.Err != "" {
			e.mu.Lock()
			if e.shadowErr == nil {
				e.shadowErr = fmt.Errorf("bounce: replayed write tag %#x (%d bytes) failed on this host's backend: %s", req.Tag, req.Len, sh.c.Err)
			}
			e.mu.Unlock()
		}
		close(sh.done)
	}()
}

// ShadowErr returns the first write the engine performed while replaying
// (SetReplayWrites) that failed, if any: this host's copy of the device
// then lacks a write the log has, and cannot stand for the primary's.
func (e *Engine) ShadowErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.shadowErr
}

// WaitShadows waits until every write the engine performed while
// replaying (SetReplayWrites) is done: a replay that ends must not leave
// its copy of the disk short of them.
func (e *Engine) WaitShadows() {
	e.mu.Lock()
	last := e.lastShadow
	e.mu.Unlock()
	if last != nil {
		<-last
	}
}

// Delivered tells the engine that the completion for tag reached the
// device (the VMM calls it for every delivered completion, live or
// replayed).
func (e *Engine) Delivered(tag uint64) {
	e.mu.Lock()
	delete(e.outstanding, tag)
	delete(e.shadows, tag)
	e.mu.Unlock()
}

// SetLive leaves replay mode (an FT backup going live): transfers the
// guest started whose completion the log did not have are started on the
// backend now, in tag order (writes with their data).
func (e *Engine) SetLive() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.replaying = false
	tags := make([]uint64, 0, len(e.outstanding))
	for t := range e.outstanding {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		if sh := e.shadows[t]; sh != nil {
			e.finishShadow(sh)
			continue
		}
		e.start(e.outstanding[t])
	}
	e.outstanding, e.shadows = nil, nil
}

// finishShadow makes a write the engine performed while replaying, and
// the log did not complete, ready when it is done; e.mu is held.
func (e *Engine) finishShadow(sh *shadow) {
	e.inflight++
	go func() {
		<-sh.done
		e.mu.Lock()
		e.ready = append(e.ready, sh.c)
		e.inflight--
		notify := e.notify
		e.mu.Unlock()
		if notify != nil {
			notify()
		}
	}()
}

// Poll takes the completions ready now, in the order they became ready.
func (e *Engine) Poll() []Completion {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.ready
	e.ready = nil
	return c
}

// Pending reports whether a completion is ready or a transfer is in
// flight (a halted guest may be waiting for it).
func (e *Engine) Pending() (ready, inflight bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ready) > 0, e.inflight > 0
}
