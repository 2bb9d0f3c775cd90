package blk

import (
	"encoding/binary"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// Op is what an accepted request asks of the backend.
type Op uint8

// Ops.
const (
	OpRead  Op = 1 // Len bytes at Offset into the guest
	OpWrite Op = 2 // Len bytes from the guest to Offset
	OpFlush Op = 3 // make every completed write durable
)

// Request is a request the device accepted for the backend: a read or a
// write of Len bytes (a positive multiple of SectorSize) at byte Offset,
// or a flush (Offset and Len 0). Tags follow guest order.
type Request struct {
	Tag    uint64
	Op     Op
	Offset uint64
	Len    uint32
	// Chain is the guest's descriptor chain: header, data, status.
	Chain virtio.Chain
	// Data is a write's data once submitted (nil while it waits, and for
	// reads and flushes): what Resubmit hands the engine again.
	Data []byte
}

// conflicts reports whether later must wait for earlier (a request the
// guest made before it) to complete. Two reads never conflict: each one's
// data is logged whatever order the host disk serves them in. A read and a
// write, or two writes, conflict when their byte ranges overlap: raced on
// the host disk they would leave data (in the guest, or on the disk) that
// depends on host timing. A flush waits for every earlier write, so that
// it covers them; nothing waits for a flush.
func conflicts(earlier, later *Request) bool {
	switch {
	case later.Op == OpFlush:
		return earlier.Op == OpWrite
	case earlier.Op == OpFlush, earlier.Op == OpRead && later.Op == OpRead:
		return false
	}
	return earlier.Offset < later.Offset+uint64(later.Len) && later.Offset < earlier.Offset+uint64(earlier.Len)
}

// verdict is what parse made of a request: an Op to schedule, or a status
// to answer with at once (op 0).
type verdict struct {
	op     Op
	status byte
	offset uint64
	len    uint32
	getID  bool // answer at once with the ID before the status
}

func answer(status byte) verdict { return verdict{status: status} }

// parse checks a request given its chain's readable and writable lengths
// (writeLen at least 1: the status byte) and its header (meaningful if
// readLen is at least headerLen). The layout is free (virtio 1.x: any
// descriptor boundaries), but the bytes must be: readable, the header
// then a write's data; writable, a read's data (or the ID) then the
// status byte.
func parse(readLen, writeLen uint32, hdr [headerLen]byte, cfg Config) verdict {
	if readLen < headerLen {
		return answer(StatusIOErr)
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	var v verdict
	switch typ {
	case TypeIn:
		if readLen != headerLen { // readable data
			return answer(StatusIOErr)
		}
		v = verdict{op: OpRead, len: writeLen - 1}
	case TypeOut:
		if writeLen != 1 || cfg.ReadOnly { // writable data, or a read-only disk
			return answer(StatusIOErr)
		}
		v = verdict{op: OpWrite, len: readLen - headerLen}
	case TypeFlush:
		if readLen != headerLen || writeLen != 1 {
			return answer(StatusIOErr)
		}
		if cfg.ReadOnly {
			return answer(StatusOK) // nothing was ever written
		}
		return verdict{op: OpFlush}
	case TypeGetID:
		if readLen != headerLen {
			return answer(StatusIOErr)
		}
		return verdict{getID: true}
	default:
		return answer(StatusUnsupp)
	}
	// A read or a write: whole sectors, inside the disk.
	if v.len%SectorSize != 0 || v.len > MaxDataLen || sector > cfg.Capacity/SectorSize {
		return answer(StatusIOErr)
	}
	v.offset = sector * SectorSize
	if uint64(v.len) > cfg.Capacity-v.offset {
		return answer(StatusIOErr)
	}
	if v.len == 0 {
		return answer(StatusOK) // nothing to move
	}
	return v
}

// Notify implements virtio.Backend: it takes every available request,
// answers at once those it can (malformed ones, GET_ID, empty transfers),
// and queues the others, submitting each one that conflicts with nothing
// before it.
func (d *Device) Notify(_ int, vq *virtio.Queue) {
	d.vq = vq
	for {
		c, ok := vq.Pop()
		if !ok {
			break // empty, or the ring is malformed and the device broken
		}
		d.accept(c)
	}
	d.schedule()
}

// accept parses a fresh chain: it answers it or appends it to the waiting
// requests.
func (d *Device) accept(c virtio.Chain) {
	if c.WriteLen == 0 {
		d.vq.Push(c.Head, 0) // no status byte: there is no way to answer
		return
	}
	var hdr [headerLen]byte
	if c.ReadLen >= headerLen {
		if _, err := d.vq.Gather(&c, 0, hdr[:]); err != nil {
			d.finish(&c, StatusIOErr, 0)
			return
		}
	}
	v := parse(c.ReadLen, c.WriteLen, hdr, d.cfg)
	switch {
	case v.getID:
		var id [IDLen]byte
		copy(id[:], d.cfg.ID)
		n, _ := d.vq.Scatter(&c, 0, id[:min(IDLen, c.WriteLen-1)])
		d.finish(&c, StatusOK, uint32(n))
	case v.op == 0:
		d.finish(&c, v.status, 0)
	default:
		d.waiting = append(d.waiting, &Request{Tag: d.nextTag, Op: v.op, Offset: v.offset, Len: v.len, Chain: c})
		d.nextTag++
	}
}

// live reports whether c is still in flight on the device's queue.
func (d *Device) live(c *virtio.Chain) bool { return d.vq != nil && d.vq.Valid(c) }

// finish answers a chain: the status byte (its last writable byte), then
// the used ring entry with data bytes written before it. A chain gone
// stale is left alone.
func (d *Device) finish(c *virtio.Chain, status byte, data uint32) {
	if _, err := d.vq.Scatter(c, uint64(c.WriteLen-1), []byte{status}); err != nil {
		return
	}
	d.vq.Push(c.Head, data+1) // an error leaves the device broken; nothing to add
}

// schedule submits, in guest order, every waiting request that conflicts
// with no earlier request still in flight or waiting, while fewer than
// MaxInFlight are in flight, and drops the ones whose chain went stale.
func (d *Device) schedule() {
	kept := d.waiting[:0]
	for _, r := range d.waiting {
		switch {
		case !d.live(&r.Chain):
		case len(d.inflight) >= MaxInFlight || d.blocked(r, kept):
			kept = append(kept, r)
		default:
			d.submit(r)
		}
	}
	clear(d.waiting[len(kept):])
	d.waiting = kept
}

// blocked reports whether r conflicts with an earlier request in flight or
// among earlier.
func (d *Device) blocked(r *Request, earlier []*Request) bool {
	for _, f := range d.inflight {
		if f.Tag < r.Tag && conflicts(f, r) {
			return true
		}
	}
	for _, e := range earlier {
		if conflicts(e, r) {
			return true
		}
	}
	return false
}

// submit hands r to the engine, gathering a write's data from the guest
// now, on the vCPU thread, or answers it with an I/O error if it cannot.
func (d *Device) submit(r *Request) {
	req := bounce.Request{Tag: r.Tag, Len: int(r.Len), Arg: r.Offset}
	switch r.Op {
	case OpWrite:
		data := make([]byte, r.Len)
		if _, err := d.vq.Gather(&r.Chain, headerLen, data); err != nil {
			d.finish(&r.Chain, StatusIOErr, 0)
			return
		}
		req.Write, req.Data = true, data
	case OpFlush:
		req.Write = true
	}
	if err := d.engine.Submit(req); err != nil {
		d.finish(&r.Chain, StatusIOErr, 0)
		return
	}
	r.Data = req.Data
	d.inflight[r.Tag] = r
}

// Complete takes the completion of a transfer, on the vCPU thread at a
// logged delivery point (live or replayed): it copies a read's data into
// the guest, writes the status, pushes the chain (raising the interrupt)
// and submits the waiting requests this one held back. A completion for a
// tag not in flight is ignored; one whose chain went stale (a reset, a
// queue disabled) only frees its disk range, without touching guest
// memory.
func (d *Device) Complete(c bounce.Completion) {
	r, ok := d.inflight[c.Tag]
	if !ok {
		return
	}
	delete(d.inflight, c.Tag)
	if d.live(&r.Chain) {
		d.answerCompletion(r, c)
	}
	d.schedule()
}

func (d *Device) answerCompletion(r *Request, c bounce.Completion) {
	switch {
	case c.Err != "":
		d.finish(&r.Chain, StatusIOErr, 0)
	case r.Op != OpRead:
		d.finish(&r.Chain, StatusOK, 0)
	case len(c.Data) != int(r.Len):
		d.finish(&r.Chain, StatusIOErr, 0) // a log that does not fit the request
	default:
		if _, err := d.vq.Scatter(&r.Chain, 0, c.Data); err != nil {
			d.finish(&r.Chain, StatusIOErr, 0)
			return
		}
		d.finish(&r.Chain, StatusOK, r.Len)
	}
}
