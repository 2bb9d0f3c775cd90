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
	if id := g.ReadReg(0x008); id != DeviceID {
		t.Errorf("device ID %d", id)
	}
	g.WriteReg(virtio.RegDeviceFeaturesSel, 0)
	want := uint32(FeatureMTU | FeatureMAC | FeatureStatus)
	if f := g.ReadReg(virtio.RegDeviceFeatures); f != want {
		t.Errorf("features %#x, want %#x", f, want)
	}
	if got := g.MMIO.DriverFeatures(); got != uint64(want)|virtio.FeatureVersion1 {
		t.Errorf("negotiated %#x", got)
	}
	read := func(off uint64, n int) []byte {
		b := make([]byte, n)
		g.MMIO.Read(virtio.ConfigOffset+off, b)
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
	g.MMIO.Write(virtio.ConfigOffset, []byte{1, 2, 3, 4}) // read-only: ignored
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
	g.Notify(TxQueue)
	g.Collect()
	if !b1.Done || !b2.Done || !b3.Done || g.Rises == 0 {
		t.Fatal("transmit chains not returned at once, or no interrupt")
	}
	// The guest reuses the buffers at once; the frames were copied.
	clear(g.Mem(b1.Segs[0].Addr, len(f1)))
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
	if !g.MMIO.Active() {
		t.Fatalf("device broken: %s", g.MMIO.Fault())
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
		{{N: HeaderLen}, {N: 60, Fill: frame(60, 1)}, {N: 4, Writable: true}}, // writable bytes
		{{N: 60, Writable: true}},                  // writable only
		{{N: HeaderLen - 1}},                       // short header, no frame
		{{N: HeaderLen}},                           // no frame
		{{N: HeaderLen + MinFrame - 1}},            // runt
		{{N: HeaderLen}, {N: MaxFrame + 1}},        // too long
		{{N: uint32(len(csum)), Fill: csum}},       // checksum offload
		{{N: uint32(len(gso)), Fill: gso}},         // segmentation offload
		{{N: 0}, {N: HeaderLen}, {N: 0}, {N: 100}}, // fine, with empty descriptors
	} {
		bufs = append(bufs, g.Post(TxQueue, segs...))
	}
	g.Notify(TxQueue)
	g.Collect()
	for i, b := range bufs {
		if !b.Done || b.Written != 0 {
			t.Errorf("chain %d: done %v, written %d", i, b.Done, b.Written)
		}
	}
	if st := g.dev.Stats(); st.TxDropped != 8 || st.TxFrames != 1 {
		t.Errorf("stats %+v, want 8 dropped and 1 sent", st)
	}
	if !g.MMIO.Active() {
		t.Fatalf("device broken: %s", g.MMIO.Fault())
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
	g.Notify(TxQueue)
	g.Collect()
	if tx, _ := g.dev.InFlight(); tx != MaxTxInFlight {
		t.Fatalf("%d frames in flight, want %d", tx, MaxTxInFlight)
	}
	if got := len(g.Rings[TxQueue].Used); got != MaxTxInFlight {
		t.Fatalf("%d chains returned, want the %d taken", got, MaxTxInFlight)
	}
	g.Notify(TxQueue) // no room: nothing more is taken
	var sent [][]byte
	for len(sent) < n {
		sent = append(sent, g.completeTx(""))
	}
	for i, f := range sent {
		if !bytes.Equal(f, frame(64, byte(i))) {
			t.Fatalf("frame %d out of order", i)
		}
	}
	if len(g.Rings[TxQueue].Used) != n || g.dev.Stats().TxFrames != n {
		t.Errorf("%d chains returned, %d frames sent; want %d", len(g.Rings[TxQueue].Used), g.dev.Stats().TxFrames, n)
	}
}

func TestReceiveFillsPostedBuffers(t *testing.T) {
	g := newTestGuest(t)
	if _, rx := g.dev.InFlight(); rx {
		t.Fatal("a receive stands before the driver notified")
	}
	b1 := g.postRx(HeaderLen + MaxFrame)
	b2 := g.Post(RxQueue, seg{N: 5, Writable: true}, seg{N: 20, Writable: true}, seg{N: 2000, Writable: true})
	g.Notify(RxQueue)
	tag := g.dev.rxTag
	if tag == 0 || g.dev.rxBatch != 2 {
		t.Fatalf("after the notification: receive tag %d for %d frames; want one for the 2 buffers", tag, g.dev.rxBatch)
	}
	f1, f2 := frame(MaxFrame, 1), frame(MinFrame, 2)
	rises := g.Rises
	g.deliver(f1)
	if !b1.Done || b1.Written != HeaderLen+MaxFrame || g.Rises == rises {
		t.Fatalf("first buffer: done %v, written %d", b1.Done, b1.Written)
	}
	if g.dev.rxTag == 0 || g.dev.rxTag == tag || g.dev.rxBatch != 1 {
		t.Fatalf("receive tag %d after %d, for %d frames: want a new one for 1", g.dev.rxTag, tag, g.dev.rxBatch)
	}
	g.deliver(f2)
	if !b2.Done || b2.Written != HeaderLen+MinFrame {
		t.Fatalf("second buffer: done %v, written %d", b2.Done, b2.Written)
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
	g.Notify(RxQueue)
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
	if !b.Done || g.dev.Stats().RxErrors != 1 || g.dev.Stats().RxFrames != RxBatchMax+5 {
		t.Fatalf("after a cut batch: stats %+v", g.dev.Stats())
	}
}

func TestReceiveDropsWithoutAGoodBuffer(t *testing.T) {
	g := newTestGuest(t)
	g.Notify(TxQueue) // any notification arms the receive path
	g.deliver(frame(60, 1))
	if st := g.dev.Stats(); st.RxNoBuffer != 1 {
		t.Fatalf("no buffer: stats %+v", st)
	}
	readable := g.Post(RxQueue, seg{N: 2000})
	mixed := g.Post(RxQueue, seg{N: 10}, seg{N: 2000, Writable: true})
	small := g.postRx(HeaderLen + 59)
	good := g.postRx(HeaderLen + 60)
	g.Notify(RxQueue)
	for range 4 {
		g.deliver(frame(60, 2))
	}
	for i, b := range []*buf{readable, mixed, small} {
		if !b.Done || b.Written != 0 {
			t.Errorf("bad buffer %d: done %v, written %d", i, b.Done, b.Written)
		}
	}
	if !good.Done || good.Written != HeaderLen+60 {
		t.Errorf("good buffer: done %v, written %d", good.Done, good.Written)
	}
	g.deliver(frame(MinFrame, 3)[:MinFrame-1]) // a backend breaking the rules
	g.deliver(make([]byte, MaxFrame+1))        // likewise
	g.deliverRaw(nil, "")                      // an empty batch
	g.deliverRaw([]byte{0x40, 0}, "")          // a record cut short
	want := Stats{RxFrames: 1, RxNoBuffer: 1, RxBadBuffer: 3, RxErrors: 4}
	if st := g.dev.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if !g.MMIO.Active() {
		t.Fatalf("device broken: %s", g.MMIO.Fault())
	}
}

// A receive error (a closed link) stops the receive path until the
// driver notifies again, so a dead backend does not fail in a loop.
func TestReceiveErrorStopsUntilNotified(t *testing.T) {
	g := newTestGuest(t)
	g.Notify(RxQueue)
	g.deliverRaw(nil, "link closed")
	if _, rx := g.dev.InFlight(); rx || g.dev.Stats().RxErrors != 1 {
		t.Fatalf("after an error: receiving %v, stats %+v", rx, g.dev.Stats())
	}
	b := g.postRx(2000)
	g.Notify(RxQueue)
	g.deliver(frame(100, 1))
	if !b.Done || b.Written != HeaderLen+100 {
		t.Fatal("no reception after the driver notified again")
	}
}

func TestUnknownAndStaleCompletionsAreIgnored(t *testing.T) {
	g := newTestGuest(t)
	g.postRx(2000)
	g.Notify(RxQueue)
	before := g.dev.Save()
	ram := slices.Clone(g.RAM.Data)
	g.complete(bounceCompletion(999, frame(60, 1)))
	g.complete(bounceCompletion(0, frame(60, 1)))
	if !reflect.DeepEqual(before, g.dev.Save()) || !bytes.Equal(ram, g.RAM.Data) {
		t.Fatal("a completion for a tag not in flight changed something")
	}
}

// A frame in flight across a reset completes without touching guest
// memory, and takes nothing from the ring while the device is down.
func TestTransmitCompletionAcrossAReset(t *testing.T) {
	g := newTestGuest(t)
	g.sendFrame(frame(60, 1), false)
	g.Notify(TxQueue)
	g.WriteReg(virtio.RegStatus, 0) // reset; the new driver is not up yet
	ram := slices.Clone(g.RAM.Data)
	rises := g.Rises
	g.dev.Engine().Delivered(g.dev.Save().Tx[0].Tag)
	g.dev.Complete(bounceCompletion(g.dev.Save().Tx[0].Tag, nil))
	if !bytes.Equal(ram, g.RAM.Data) || g.Rises != rises {
		t.Fatal("the completion touched guest memory or interrupted")
	}
	if tx, rx := g.dev.InFlight(); tx != 0 || !rx {
		t.Fatalf("%d frames in flight, receiving %v (the orphan receive should stand)", tx, rx)
	}
	g.Start(64)
	b := g.sendFrame(frame(70, 2), false)
	g.Notify(TxQueue)
	g.Collect()
	if !b.Done || len(g.dev.Save().Tx) != 1 {
		t.Fatal("the new driver's frame was not taken")
	}
}

// What a VMM reads from an interface's Attachment, and the device it
// builds on the VMM's engine slot.
func TestAttachment(t *testing.T) {
	e := replayEngine(t)
	link, _ := NewLink()
	a := Attachment(Config{MAC: testMAC}, link.Backend())
	if a.Kind != "virtio-net" || a.Identity != "mac=52:54:00:12:34:56" || a.ReplayWrites || a.Backend == nil {
		t.Fatalf("attachment %+v", a)
	}
	dev, err := a.New(e, 1<<56)
	if err != nil {
		t.Fatal(err)
	}
	d := dev.(*Device)
	if d.Engine() != e || d.Config().TagBase != 1<<56 || d.nextTag != 1<<56+1 || d.Config().MAC != testMAC {
		t.Errorf("built on engine %p (want %p), config %+v, next tag %#x", d.Engine(), e, d.Config(), d.nextTag)
	}
	bad := Attachment(Config{}, link.Backend())
	if _, err := bad.New(e, 0); err == nil {
		t.Error("an all-zero MAC built a device")
	}
}
