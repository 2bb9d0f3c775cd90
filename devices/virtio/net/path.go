package net

import (
	"encoding/binary"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// Notify implements virtio.Backend. A notification on either queue arms
// the receive path (the driver is up and has posted, or will post,
// receive buffers) and makes sure a receive is standing; on the transmit
// queue it also sends what the guest queued, as far as MaxTxInFlight
// allows. Receive buffers stay in their ring until a packet arrives.
func (d *Device) Notify(q int, _ *virtio.Queue) {
	d.rxArmed = true
	if q == TxQueue {
		d.transmit()
	}
	d.standReceive()
}

// running reports whether the driver has the device up.
func (d *Device) running() bool { return d.m != nil && d.m.Active() }

// transmit pops transmit chains and sends their frames while fewer than
// MaxTxInFlight are in flight.
func (d *Device) transmit() {
	if !d.running() {
		return
	}
	q := d.m.Queue(TxQueue)
	for len(d.tx) < MaxTxInFlight {
		c, ok := q.Pop()
		if !ok {
			return // empty, or the ring is malformed and the device broken
		}
		d.send(q, &c)
	}
}

// send copies one chain's frame out of guest memory, gives the chain back
// at once, and hands the frame to the engine. A chain that is not a frame
// the device can send is given back with nothing sent.
func (d *Device) send(q *virtio.Queue, c *virtio.Chain) {
	frame, ok := d.gatherFrame(q, c)
	if err := q.Push(c.Head, 0); err != nil || !ok {
		d.stats.TxDropped++
		return
	}
	tag := d.nextTag
	d.nextTag++
	if err := d.engine.Submit(transmitRequest(tag, frame)); err != nil {
		d.stats.TxDropped++ // not reached: the request follows the engine's rules
		return
	}
	d.tx[tag] = frame
	d.stats.TxFrames++
}

// transmitRequest is a frame's write: ordered, so the network sees frames
// in the order the guest queued them.
func transmitRequest(tag uint64, frame []byte) bounce.Request {
	return bounce.Request{Tag: tag, Len: len(frame), Write: true, Data: frame, Ordered: true}
}

// gatherFrame returns the frame after the chain's header, or false if the
// chain has device-writable bytes, a short header, an offload the device
// did not offer, or a frame outside MinFrame..MaxFrame.
func (d *Device) gatherFrame(q *virtio.Queue, c *virtio.Chain) ([]byte, bool) {
	if c.WriteLen != 0 || c.ReadLen < HeaderLen+MinFrame || c.ReadLen > HeaderLen+MaxFrame {
		return nil, false
	}
	var hdr [HeaderLen]byte
	if _, err := q.Gather(c, 0, hdr[:]); err != nil {
		return nil, false
	}
	if hdr[hdrFlags] != 0 || hdr[hdrGSOType] != 0 {
		return nil, false // NEEDS_CSUM or GSO: offloads that were not negotiated
	}
	frame := make([]byte, c.ReadLen-HeaderLen)
	if _, err := q.Gather(c, HeaderLen, frame); err != nil {
		return nil, false
	}
	return frame, true
}

// standReceive submits a receive if the path is armed, the driver is up
// and none is in flight. It asks for as many frames as the guest has
// receive buffers available now (at least one, at most RxBatchMax).
func (d *Device) standReceive() {
	if !d.rxArmed || d.rxTag != 0 || !d.running() {
		return
	}
	n := min(max(d.m.Queue(RxQueue).Available(), 1), RxBatchMax)
	tag := d.nextTag
	d.nextTag++
	if err := d.engine.Submit(receiveRequest(tag, n)); err != nil {
		return // not reached: the request follows the engine's rules
	}
	d.rxTag, d.rxBatch = tag, n
}

// receiveRequest is the standing receive: a read of a batch of up to n
// frames (see AppendFrame).
func receiveRequest(tag uint64, n int) bounce.Request {
	return bounce.Request{Tag: tag, Len: n * RecordLen, Arg: uint64(n), Upto: true}
}

// Complete takes a completion, on the vCPU thread at a logged delivery
// point (live or replayed). Each received frame goes into the next receive
// buffer, or is dropped if there is none; then the next receive is
// submitted. A transmit completion frees room for the frames waiting in
// the transmit ring, which are sent now; it touches no guest memory. A
// completion for a tag not in flight is ignored.
func (d *Device) Complete(c bounce.Completion) {
	if c.Tag != 0 && c.Tag == d.rxTag {
		d.rxTag, d.rxBatch = 0, 0
		if c.Err != "" {
			// A dead backend (a closed link) would fail each new
			// receive at once: stop until the driver notifies again.
			d.stats.RxErrors++
			d.rxArmed = false
			return
		}
		d.receiveBatch(c.Data)
		d.standReceive()
		return
	}
	if _, ok := d.tx[c.Tag]; !ok {
		return
	}
	delete(d.tx, c.Tag)
	if c.Err != "" {
		d.stats.TxErrors++
	}
	d.transmit()
}

// receiveBatch delivers the frames of a receive batch in order. A batch
// that does not parse (a backend, or a log, breaking the rules) counts one
// error; the frames before the fault are delivered.
func (d *Device) receiveBatch(batch []byte) {
	if len(batch) == 0 {
		d.stats.RxErrors++
		return
	}
	for len(batch) > 0 {
		f, rest, ok := nextFrame(batch)
		if !ok {
			d.stats.RxErrors++
			return
		}
		d.receive(f)
		batch = rest
	}
}

// receive writes frame, behind a virtio_net_hdr, into the next receive
// buffer, or drops it.
func (d *Device) receive(frame []byte) {
	if len(frame) < MinFrame || len(frame) > MaxFrame {
		d.stats.RxErrors++ // a backend (or a log) that breaks the rules
		return
	}
	if !d.running() {
		d.stats.RxNoBuffer++
		return
	}
	q := d.m.Queue(RxQueue)
	c, ok := q.Pop()
	if !ok {
		d.stats.RxNoBuffer++
		return
	}
	if c.ReadLen != 0 || uint64(c.WriteLen) < HeaderLen+uint64(len(frame)) {
		q.Push(c.Head, 0)
		d.stats.RxBadBuffer++
		return
	}
	var hdr [HeaderLen]byte // no flags, GSO_NONE
	binary.LittleEndian.PutUint16(hdr[hdrNumBuffers:], 1)
	_, err1 := q.Scatter(&c, 0, hdr[:])
	_, err2 := q.Scatter(&c, HeaderLen, frame)
	if err1 != nil || err2 != nil {
		q.Push(c.Head, 0)
		d.stats.RxBadBuffer++
		return
	}
	q.Push(c.Head, uint32(HeaderLen+len(frame)))
	d.stats.RxFrames++
}
