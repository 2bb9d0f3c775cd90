package net

import (
	"reflect"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
)

// Fuzz opcodes, the first byte of each step (mod fzOps).
const (
	fzPostRx     = iota // a receive buffer: 1-3 segments of table lengths, maybe readable
	fzPostTx            // a transmit chain: header flags, 1-3 segments, maybe writable
	fzNotify            // queue: the next byte's low bit
	fzDeliver           // a batch of frames of table lengths, a cut batch, or an error
	fzCompleteTx        // complete a frame in flight, maybe with an error
	fzReset             // device reset and a new driver
	fzRestart           // a queue disabled and enabled again
	fzOps
)

var fuzzLens = [...]uint32{0, 1, 11, 12, 13, 25, 26, 60, 100, 1000, MaxFrame - 1, MaxFrame, MaxFrame + 1, HeaderLen + MaxFrame, 2000}

func fuzzLen(b byte) uint32 { return fuzzLens[int(b)%len(fuzzLens)] }

// FuzzNetRings drives the device with a guest posting receive buffers and
// transmit chains of any layout, header and length, and a world
// delivering batches (well-formed, cut short, or failed) and completing
// frames, with resets and queue restarts in between. The device must
// never panic or break its transport, must give every chain it takes back
// exactly once (counted as sent, dropped or received), must keep a
// receive standing whenever it is armed and running, and must leave a
// state Restore accepts after every step.
func FuzzNetRings(f *testing.F) {
	// Frames both ways, a batch longer than the buffers, a receive error
	// and a re-arm, a cut batch.
	f.Add([]byte{fzPostRx, 0, 13, fzPostRx, 0, 13, fzNotify, 0,
		fzPostTx, 0, 0, 0, 7, fzPostTx, 0, 0, 1, 3, 8, fzNotify, 1,
		fzDeliver, 2, 7, 8, 9, fzCompleteTx, 0, 0, fzCompleteTx, 0, 1,
		fzDeliver, 0xc0, fzNotify, 0, fzDeliver, 0x80})
	// Bad chains of each kind, a reset with a receive and a frame in
	// flight, a queue restart.
	f.Add([]byte{fzPostRx, 0, 0x80 | 13, fzPostRx, 0, 5, fzPostRx, 1, 1, 13, fzPostRx, 0, 13,
		fzPostTx, 1, 0, 0, 7, fzPostTx, 0, 0, 0, 2, fzPostTx, 0, 0, 0, 0x80 | 7, fzPostTx, 0, 0, 0, 12,
		fzPostTx, 0, 0, 0, 9, fzNotify, 1, fzNotify, 0, fzDeliver, 3, 7, 7, 7, 7,
		fzReset, fzDeliver, 0, 7, fzPostRx, 0, 13, fzNotify, 0, fzRestart, 0, fzDeliver, 0, 7,
		fzCompleteTx, 0, 1, fzRestart, 1})
	f.Fuzz(func(t *testing.T, input []byte) {
		p := virtiotest.NewProgram(input)
		g := newGuest(t, replayEngine(t), 16)
		scratch, err := New(Config{MAC: testMAC}, replayEngine(t))
		if err != nil {
			t.Fatal(err)
		}
		for step := 0; p.More() && step < 200; step++ {
			fuzzStep(g, p)
			g.Collect()
			checkInvariants(t, g, scratch)
		}
	})
}

func fuzzStep(g *guest, p *virtiotest.Program) {
	switch p.Next() % fzOps {
	case fzPostRx:
		n := 1 + int(p.Next()%3)
		var segs []seg
		for i := range n {
			b := p.Next()
			readable := i == 0 && b&0x80 != 0 // the transport refuses readable after writable
			segs = append(segs, seg{N: fuzzLen(b & 0x7f), Writable: !readable})
		}
		g.Post(RxQueue, segs...)
	case fzPostTx:
		hdr := make([]byte, HeaderLen)
		hdr[hdrFlags], hdr[hdrGSOType] = p.Next()&1, p.Next()&1
		n := 1 + int(p.Next()%3)
		segs := []seg{{N: HeaderLen, Fill: hdr}}
		for i := range n {
			b := p.Next()
			s := seg{N: fuzzLen(b & 0x7f), Writable: b&0x80 != 0 && i == n-1}
			s.Fill = frame(max(int(s.N), MinFrame), b)[:s.N]
			segs = append(segs, s)
		}
		g.Post(TxQueue, segs...)
	case fzNotify:
		g.Notify(int(p.Next() & 1))
	case fzDeliver:
		b := p.Next()
		if g.dev.rxTag == 0 {
			return
		}
		switch {
		case b&0xc0 == 0xc0:
			g.deliverRaw(nil, "link closed")
		case b&0xc0 == 0x80:
			g.deliverRaw(AppendFrame(nil, frame(60, b))[:30], "") // cut short
		default:
			var frames [][]byte
			for range 1 + int(b&0x3f)%(RxBatchMax+2) {
				frames = append(frames, frame(max(int(fuzzLen(p.Next())), MinFrame), b))
			}
			g.deliver(frames...)
		}
	case fzCompleteTx:
		i, fail := int(p.Next()), p.Next()&1 == 1
		s := g.dev.Save()
		if len(s.Tx) == 0 {
			return
		}
		c := bounce.Completion{Tag: s.Tx[i%len(s.Tx)].Tag}
		if fail {
			c.Err = "link down"
		}
		g.complete(c)
	case fzReset:
		g.Start(16)
	case fzRestart:
		g.RestartQueue(int(p.Next() & 1))
	}
}

func checkInvariants(t *testing.T, g *guest, scratch *Device) {
	t.Helper()
	if !g.MMIO.Active() {
		t.Fatalf("device broken: %s", g.MMIO.Fault())
	}
	s := g.dev.Save()
	if len(s.Tx) > MaxTxInFlight {
		t.Fatalf("%d frames in flight", len(s.Tx))
	}
	if s.RxArmed && s.RxTag == 0 {
		t.Fatal("armed and running, but no receive standing")
	}
	st := s.Stats
	if n := uint64(len(g.Rings[TxQueue].Used)); n != st.TxFrames+st.TxDropped {
		t.Fatalf("%d transmit chains returned, but %d sent and %d dropped", n, st.TxFrames, st.TxDropped)
	}
	if n := uint64(len(g.Rings[RxQueue].Used)); n != st.RxFrames+st.RxBadBuffer {
		t.Fatalf("%d receive buffers returned, but %d frames received and %d bad buffers", n, st.RxFrames, st.RxBadBuffer)
	}
	if uint64(len(g.frames)) != st.RxFrames {
		t.Fatalf("%d frames in guest buffers, %d counted", len(g.frames), st.RxFrames)
	}
	b, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := scratch.RestoreState(b); err != nil {
		t.Fatalf("RestoreState refuses a state SaveState returned: %v", err)
	}
	if got := scratch.Save(); !reflect.DeepEqual(got, s) {
		t.Fatalf("state changed through its encoding:\n%+v\n%+v", s, got)
	}
	// A truncated encoding is refused and leaves the device as it was.
	if len(b) > 1 {
		if err := scratch.RestoreState(b[:len(b)-1]); err == nil {
			t.Fatal("a truncated state was restored")
		}
		if got := scratch.Save(); !reflect.DeepEqual(got, s) {
			t.Fatal("a refused state changed the device")
		}
	}
}
