package net

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
)

const ramSize = 1 << 20

var testMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// seg is one descriptor of a chain to post.
type seg = virtiotest.Seg

// buf is a chain the guest posted.
type buf = virtiotest.Chain

// guest is a virtio-net driver over byte-slice RAM, driving a Device
// through its MMIO registers.
type guest struct {
	*virtiotest.Driver
	dev    *Device
	frames [][]byte // frames received, in order
}

func newGuest(t testing.TB, engine *bounce.Engine, qsize uint16) *guest {
	t.Helper()
	g := &guest{}
	g.Driver = virtiotest.New(t, ramSize, func(mem virtio.Memory, irq func(bool)) (m *virtio.MMIO, err error) {
		g.dev, m, err = NewMMIO(Config{MAC: testMAC}, engine, mem, irq)
		return m, err
	})
	g.OnUsed = g.checkUsed
	g.Start(qsize)
	return g
}

// checkUsed checks a chain the device returned: a transmit chain has
// nothing written; a receive buffer holds a header and a frame, which is
// appended to g.frames.
func (g *guest) checkUsed(b *buf) {
	switch {
	case b.Q == TxQueue && b.Written != 0:
		g.T.Fatalf("transmit chain %d: %d bytes written", b.Head, b.Written)
	case b.Q == RxQueue && b.Written != 0:
		got := g.Written(b, b.Written)
		if err := checkReceived(got); err != nil {
			g.T.Fatalf("receive buffer %d: %v", b.Head, err)
		}
		g.frames = append(g.frames, got[HeaderLen:])
	}
}

// postRx posts a receive buffer of n bytes.
func (g *guest) postRx(n uint32) *buf { return g.Post(RxQueue, seg{N: n, Writable: true}) }

// sendFrame posts frame behind a zero header, as Linux does: header and
// frame in one descriptor, or split in two.
func (g *guest) sendFrame(frame []byte, split bool) *buf {
	if split {
		return g.Post(TxQueue, seg{N: HeaderLen}, seg{N: uint32(len(frame)), Fill: frame})
	}
	return g.Post(TxQueue, seg{N: uint32(HeaderLen + len(frame)), Fill: append(make([]byte, HeaderLen), frame...)})
}

// checkReceived checks what the device wrote into a receive buffer: a
// header with nothing but num_buffers 1, then a frame.
func checkReceived(b []byte) error {
	want := make([]byte, HeaderLen)
	want[hdrNumBuffers] = 1
	switch {
	case len(b) < HeaderLen+MinFrame || len(b) > HeaderLen+MaxFrame:
		return fmt.Errorf("%d bytes written", len(b))
	case !bytes.Equal(b[:HeaderLen], want):
		return fmt.Errorf("header % x", b[:HeaderLen])
	}
	return nil
}

// replayEngine is an engine that never calls its backend: the tests play
// the backend themselves, delivering completions with deliver and
// completeTx.
func replayEngine(t testing.TB) *bounce.Engine { return virtiotest.ReplayEngine(t) }

// deliver completes the standing receive with a batch of frames, as the
// VMM does at a delivery point.
func (g *guest) deliver(frames ...[]byte) {
	g.T.Helper()
	var batch []byte
	for _, f := range frames {
		batch = AppendFrame(batch, f)
	}
	g.deliverRaw(batch, "")
}

// deliverRaw completes the standing receive with data or err.
func (g *guest) deliverRaw(data []byte, err string) {
	g.T.Helper()
	if g.dev.rxTag == 0 {
		g.T.Fatal("no receive standing")
	}
	g.complete(bounce.Completion{Tag: g.dev.rxTag, Data: data, Err: err})
}

// completeTx completes the oldest transmitted frame in flight and returns
// it.
func (g *guest) completeTx(err string) []byte {
	g.T.Helper()
	s := g.dev.Save()
	if len(s.Tx) == 0 {
		g.T.Fatal("no frame in flight")
	}
	g.complete(bounce.Completion{Tag: s.Tx[0].Tag, Err: err})
	return s.Tx[0].Frame
}

func (g *guest) complete(c bounce.Completion) {
	g.dev.Engine().Delivered(c.Tag)
	g.dev.Complete(c)
	g.Collect()
}

// frame returns an Ethernet frame of n bytes (at least MinFrame) from the
// test MAC to a peer, with seed in its payload.
func frame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x52, 0x54, 0, 0, 0, 1})
	copy(f[6:], testMAC[:])
	binary.BigEndian.PutUint16(f[12:], 0x88b5) // IEEE local experimental
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i*7)
	}
	return f
}

func bounceCompletion(tag uint64, data []byte) bounce.Completion {
	return bounce.Completion{Tag: tag, Data: data}
}
