package net

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/devices/virtio"
)

func reflectEqual(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, bytes.Equal)
}

func newTestGuest(t *testing.T) *guest {
	t.Helper()
	return newGuest(t, replayEngine(t), 64)
}

func TestNewRefusesBadConfigs(t *testing.T) {
	e := replayEngine(t)
	for _, mac := range [][6]byte{{}, {0x01, 0, 0x5e, 0, 0, 1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, err := New(Config{MAC: mac}, e); err == nil {
			t.Errorf("MAC %s accepted", formatMAC(mac))
		}
	}
	if _, err := New(Config{MAC: testMAC}, nil); err == nil {
		t.Error("no engine accepted")
	}
}

func TestFeaturesAndConfigSpace(t *testing.T) {
	g := newTestGuest(t)
	if id := g.rd(0x008); id != DeviceID {
		t.Errorf("device ID %d", id)
	}
	g.wr(virtio.RegDeviceFeaturesSel, 0)
	want := uint32(FeatureMTU | FeatureMAC | FeatureStatus)
	if f := g.rd(virtio.RegDeviceFeatures); f != want {
		t.Errorf("features %#x, want %#x", f, want)
	}
	if got := g.mmio.DriverFeatures(); got != uint64(want)|virtio.FeatureVersion1 {
		t.Errorf("negotiated %#x", got)
	}
	read := func(off uint64, n int) []byte {
		b := make([]byte, n)
		g.mmio.Read(virtio.ConfigOffset+off, b)
		return b
	}
	var space []byte
	for off := uint64(0); off < 16; off += 4 {
		space = append(space, read(off, 4)...)
	}
	wantSpace := []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 0, 0, 0xdc, 0x05, 0, 0, 0, 0}
	if !bytes.Equal(space, wantSpace) {
		t.Errorf("config space % x, want % x", space, wantSpace)
	}
	if b := read(6, 2); binary.LittleEndian.Uint16(b) != StatusLinkUp {
		t.Errorf("status % x", b)
	}
	if b := read(3, 1); b[0] != 0x12 {
		t.Errorf("mac byte 3: %#x", b[0])
	}
	g.mmio.Write(virtio.ConfigOffset, []byte{1, 2, 3, 4}) // read-only: ignored
	if b := read(0, 4); !bytes.Equal(b, testMAC[:4]) {
		t.Errorf("mac after a write: % x", b)
	}
	if g.dev.NumQueues() != 2 || g.dev.QueueMax(RxQueue) != QueueMax || g.dev.QueueMax(TxQueue) != QueueMax ||
		g.dev.Config().MAC != testMAC {
		t.Error("queue layout or config")
	}
}

func TestTransmitCopiesFramesAndReturnsChainsAtOnce(t *testing.T) {
	g := newTestGuest(t)
	f1, f2, f3 := frame(60, 1), frame(MaxFrame, 2), frame(MinFrame, 3)
	b1, b2, b3 := g.sendFrame(f1, false), g.sendFrame(f2, true), g.sendFrame(f3, false)
	g.notify(TxQueue)
	g.collect()
	if !b1.done || !b2.done || !b3.done || g.rises == 0 {
		t.Fatal("transmit chains not returned at once, or no interrupt")
	}
	// The guest reuses the buffers at once; the frames were copied.
	clear(g.mem(b1.segs[0].addr, len(f1)))
	s := g.dev.Save()
	if len(s.Tx) != 3 {
		t.Fatalf("%d frames in flight, want 3", len(s.Tx))
	}
	for i, want := range [][]byte{f1, f2, f3} {
		if !bytes.Equal(s.Tx[i].Frame, want) {
			t.Errorf("frame %d: % x", i, s.Tx[i].Frame[:16])
		}
	}
	if !slices.IsSorted([]uint64{s.Tx[0].Tag, s.Tx[1].Tag, s.Tx[2].Tag}) {
		t.Error("tags do not follow guest order")
	}
	g.completeTx("")
	g.completeTx("link down")
	g.completeTx("")
	if tx, _ := g.dev.InFlight(); tx != 0 {
		t.Errorf("%d frames in flight after their completions", tx)
	}
	if st := g.dev.Stats(); st != (Stats{TxFrames: 3, TxErrors: 1}) {
		t.Errorf("stats %+v", st)
	}
	if !g.mmio.Active() {
		t.Fatalf("device broken: %s", g.mmio.Fault())
	}
}

func TestMalformedTransmitChainsAreDropped(t *testing.T) {
	g := newTestGuest(t)
	csum := append(make([]byte, HeaderLen), frame(60, 1)...)
	csum[hdrFlags] = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	gso := append(make([]byte, HeaderLen), frame(60, 1)...)
	gso[hdrGSOType] = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	var bufs []*buf
	for _, segs := range [][]seg{
		{{n: HeaderLen}, {n: 60, fill: frame(60, 1)}, {n: 4, writable: true}}, // writable bytes
		{{n: 60, writable: true}},                  // writable only
		{{n: HeaderLen - 1}},                       // short header, no frame
		{{n: HeaderLen}},                           // no frame
		{{n: HeaderLen + MinFrame - 1}},            // runt
		{{n: HeaderLen}, {n: MaxFrame + 1}},        // too long
		{{n: uint32(len(csum)), fill: csum}},       // checksum offload
		{{n: uint32(len(gso)), fill: gso}},         // segmentation offload
		{{n: 0}, {n: HeaderLen}, {n: 0}, {n: 100}}, // fine, with empty descriptors
	} {
		bufs = append(bufs, g.post(TxQueue, segs...))
	}
	g.notify(TxQueue)
	g.collect()
	for i, b := range bufs {
		if !b.done || b.written != 0 {
			t.Errorf("chain %d: done %v, written %d", i, b.done, b.written)
		}
	}
	if st := g.dev.Stats(); st.TxDropped != 8 || st.TxFrames != 1 {
		t.Errorf("stats %+v, want 8 dropped and 1 sent", st)
	}
	if !g.mmio.Active() {
		t.Fatalf("device broken: %s", g.mmio.Fault())
	}
}

// At most MaxTxInFlight frames are in flight; the others wait in the ring
// until completions free room, and then leave in guest order.
func TestTransmitInFlightIsBounded(t *testing.T) {
	g := newGuest(t, replayEngine(t), 128)
	const n = MaxTxInFlight + 10
	for i := range n {
		g.sendFrame(frame(64, byte(i)), false)
	}
	g.notify(TxQueue)
	g.collect()
	if tx, _ := g.dev.InFlight(); tx != MaxTxInFlight {
		t.Fatalf("%d frames in flight, want %d", tx, MaxTxInFlight)
	}
	if got := len(g.rings[TxQueue].used); got != MaxTxInFlight {
		t.Fatalf("%d chains returned, want the %d taken", got, MaxTxInFlight)
	}
	g.notify(TxQueue) // no room: nothing more is taken
	var sent [][]byte
	for len(sent) < n {
		sent = append(sent, g.completeTx(""))
	}
	for i, f := range sent {
		if !bytes.Equal(f, frame(64, byte(i))) {
			t.Fatalf("frame %d out of order", i)
		}
	}
	if len(g.rings[TxQueue].used) != n || g.dev.Stats().TxFrames != n {
		t.Errorf("%d chains returned, %d frames sent; want %d", len(g.rings[TxQueue].used), g.dev.Stats().TxFrames, n)
	}
}

func TestReceiveFillsPostedBuffers(t *testing.T) {
	g := newTestGuest(t)
	if _, rx := g.dev.InFlight(); rx {
		t.Fatal("a receive stands before the driver notified")
	}
	b1 := g.postRx(HeaderLen + MaxFrame)
	b2 := g.post(RxQueue, seg{n: 5, writable: true}, seg{n: 20, writable: true}, seg{n: 2000, writable: true})
	g.notify(RxQueue)
	tag := g.dev.rxTag
	if tag == 0 || g.dev.rxBatch != 2 {
		t.Fatalf("after the notification: receive tag %d for %d frames; want one for the 2 buffers", tag, g.dev.rxBatch)
	}
	f1, f2 := frame(MaxFrame, 1), frame(MinFrame, 2)
	rises := g.rises
	g.deliver(f1)
	if !b1.done || b1.written != HeaderLen+MaxFrame || g.rises == rises {
		t.Fatalf("first buffer: done %v, written %d", b1.done, b1.written)
	}
	if g.dev.rxTag == 0 || g.dev.rxTag == tag || g.dev.rxBatch != 1 {
		t.Fatalf("receive tag %d after %d, for %d frames: want a new one for 1", g.dev.rxTag, tag, g.dev.rxBatch)
	}
	g.deliver(f2)
	if !b2.done || b2.written != HeaderLen+MinFrame {
		t.Fatalf("second buffer: done %v, written %d", b2.done, b2.written)
	}
	if len(g.frames) != 2 || !bytes.Equal(g.frames[0], f1) || !bytes.Equal(g.frames[1], f2) {
		t.Fatal("received frames differ from those delivered")
	}
	if st := g.dev.Stats(); st != (Stats{RxFrames: 2}) {
		t.Errorf("stats %+v", st)
	}
}

// One receive delivers a batch: each frame into its own buffer, in order,
// and those beyond the buffers posted are dropped.
func TestReceiveBatch(t *testing.T) {
	g := newTestGuest(t)
	for range RxBatchMax + 3 {
		g.postRx(HeaderLen + MaxFrame)
	}
	g.notify(RxQueue)
	if g.dev.rxBatch != RxBatchMax {
		t.Fatalf("receive for %d frames, want %d", g.dev.rxBatch, RxBatchMax)
	}
	var frames [][]byte
	for i := range RxBatchMax {
		frames = append(frames, frame(MinFrame+i, byte(i)))
	}
	g.deliver(frames...)
	if !reflectEqual(g.frames, frames) || g.dev.rxBatch != 3 {
		t.Fatalf("%d frames received; next receive for %d", len(g.frames), g.dev.rxBatch)
	}
	g.deliver(frame(60, 1), frame(61, 2), frame(62, 3), frame(63, 4), frame(64, 5))
	if st := g.dev.Stats(); st.RxFrames != RxBatchMax+3 || st.RxNoBuffer != 2 {
		t.Fatalf("stats %+v", st)
	}
	if g.dev.rxBatch != 1 {
		t.Errorf("with no buffer posted: a receive for %d frames, want 1", g.dev.rxBatch)
	}
	// A batch cut short: the frames before the cut are delivered.
	b := g.postRx(2000)
	g.postRx(2000)
	batch := AppendFrame(nil, frame(70, 7))
	batch = append(AppendFrame(batch, frame(80, 8)), 0x20)
	g.deliverRaw(batch, "")
	if !b.done || g.dev.Stats().RxErrors != 1 || g.dev.Stats().RxFrames != RxBatchMax+5 {
		t.Fatalf("after a cut batch: stats %+v", g.dev.Stats())
	}
}

func TestReceiveDropsWithoutAGoodBuffer(t *testing.T) {
	g := newTestGuest(t)
	g.notify(TxQueue) // any notification arms the receive path
	g.deliver(frame(60, 1))
	if st := g.dev.Stats(); st.RxNoBuffer != 1 {
		t.Fatalf("no buffer: stats %+v", st)
	}
	readable := g.post(RxQueue, seg{n: 2000})
	mixed := g.post(RxQueue, seg{n: 10}, seg{n: 2000, writable: true})
	small := g.postRx(HeaderLen + 59)
	good := g.postRx(HeaderLen + 60)
	g.notify(RxQueue)
	for range 4 {
		g.deliver(frame(60, 2))
	}
	for i, b := range []*buf{readable, mixed, small} {
		if !b.done || b.written != 0 {
			t.Errorf("bad buffer %d: done %v, written %d", i, b.done, b.written)
		}
	}
	if !good.done || good.written != HeaderLen+60 {
		t.Errorf("good buffer: done %v, written %d", good.done, good.written)
	}
	g.deliver(frame(MinFrame, 3)[:MinFrame-1]) // a backend breaking the rules
	g.deliver(make([]byte, MaxFrame+1))        // likewise
	g.deliverRaw(nil, "")                      // an empty batch
	g.deliverRaw([]byte{0x40, 0}, "")          // a record cut short
	want := Stats{RxFrames: 1, RxNoBuffer: 1, RxBadBuffer: 3, RxErrors: 4}
	if st := g.dev.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if !g.mmio.Active() {
		t.Fatalf("device broken: %s", g.mmio.Fault())
	}
}

// A receive error (a closed link) stops the receive path until the
// driver notifies again, so a dead backend does not fail in a loop.
func TestReceiveErrorStopsUntilNotified(t *testing.T) {
	g := newTestGuest(t)
	g.notify(RxQueue)
	g.deliverRaw(nil, "link closed")
	if _, rx := g.dev.InFlight(); rx || g.dev.Stats().RxErrors != 1 {
		t.Fatalf("after an error: receiving %v, stats %+v", rx, g.dev.Stats())
	}
	b := g.postRx(2000)
	g.notify(RxQueue)
	g.deliver(frame(100, 1))
	if !b.done || b.written != HeaderLen+100 {
		t.Fatal("no reception after the driver notified again")
	}
}

func TestUnknownAndStaleCompletionsAreIgnored(t *testing.T) {
	g := newTestGuest(t)
	g.postRx(2000)
	g.notify(RxQueue)
	before := g.dev.Save()
	ram := slices.Clone(g.ram.Data)
	g.complete(bounceCompletion(999, frame(60, 1)))
	g.complete(bounceCompletion(0, frame(60, 1)))
	if !reflect.DeepEqual(before, g.dev.Save()) || !bytes.Equal(ram, g.ram.Data) {
		t.Fatal("a completion for a tag not in flight changed something")
	}
}

// A frame in flight across a reset completes without touching guest
// memory, and takes nothing from the ring while the device is down.
func TestTransmitCompletionAcrossAReset(t *testing.T) {
	g := newTestGuest(t)
	g.sendFrame(frame(60, 1), false)
	g.notify(TxQueue)
	g.wr(virtio.RegStatus, 0) // reset; the new driver is not up yet
	ram := slices.Clone(g.ram.Data)
	rises := g.rises
	g.dev.Engine().Delivered(g.dev.Save().Tx[0].Tag)
	g.dev.Complete(bounceCompletion(g.dev.Save().Tx[0].Tag, nil))
	if !bytes.Equal(ram, g.ram.Data) || g.rises != rises {
		t.Fatal("the completion touched guest memory or interrupted")
	}
	if tx, rx := g.dev.InFlight(); tx != 0 || !rx {
		t.Fatalf("%d frames in flight, receiving %v (the orphan receive should stand)", tx, rx)
	}
	g.start(64)
	b := g.sendFrame(frame(70, 2), false)
	g.notify(TxQueue)
	g.collect()
	if !b.done || len(g.dev.Save().Tx) != 1 {
		t.Fatal("the new driver's frame was not taken")
	}
}
