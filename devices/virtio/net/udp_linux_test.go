package net

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// openTestUDP opens a frame socket on loopback, closed at the test's end.
func openTestUDP(t *testing.T, peer netip.AddrPort) *UDP {
	t.Helper()
	u, err := OpenUDP(UDPConfig{Local: loopback, Peer: peer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// worldSocket is the other end: a plain UDP socket on loopback.
func worldSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// readBatch serves one receive of up to max frames and splits the batch.
func readBatch(t *testing.T, u *UDP, max int) [][]byte {
	t.Helper()
	batch, err := u.Serve(receiveRequest(1, max))
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for len(batch) > 0 {
		f, rest, ok := nextFrame(batch)
		if !ok {
			t.Fatalf("batch does not parse: % x", batch)
		}
		frames, batch = append(frames, f), rest
	}
	return frames
}

// expectDatagram reads one datagram from c, or fails after a second.
func expectDatagram(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2*MaxFrame)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no datagram arrived: %v", err)
	}
	return buf[:n], from
}

// Without a configured peer, frames are dropped (and counted) until a
// datagram arrives; then they go to its source, kept from then on. Datagrams come out as
// frames, in order, those already waiting in the same batch; empty and
// over-long ones are discarded and counted.
func TestUDPCarriesFramesBothWays(t *testing.T) {
	u := openTestUDP(t, netip.AddrPort{})
	world := worldSocket(t)
	if _, err := u.Serve(bounce.Request{Tag: 1, Len: 60, Write: true, Data: frame(60, 1)}); err != nil {
		t.Fatal(err)
	}
	if u.TxNoPeer() != 1 || u.Peer().IsValid() {
		t.Fatalf("a frame with no peer: %d dropped, peer %v; want 1 dropped, no peer", u.TxNoPeer(), u.Peer())
	}

	to := net.UDPAddrFromAddrPort(u.LocalAddr())
	var want [][]byte
	for i := range 8 {
		f := frame(MinFrame+i*150, byte(i))
		if i == 5 {
			f = frame(MaxFrame, 9) // the largest that passes
		}
		want = append(want, f)
		world.WriteToUDP(f, to)
		switch i {
		case 2:
			world.WriteToUDP(make([]byte, MaxFrame+1), to) // one byte too many
		case 4:
			world.WriteToUDP(nil, to)
		}
	}
	// Loopback delivers at once; the pause is margin, so that the first
	// read finds all of them waiting.
	time.Sleep(50 * time.Millisecond)
	got := readBatch(t, u, RxBatchMax)
	if !reflectEqual(got, want) {
		t.Fatalf("received %d frames, want the %d sent, intact and in order", len(got), len(want))
	}
	if u.Oversize() != 2 {
		t.Errorf("%d datagrams discarded, want 2 (an empty one and one of MaxFrame+1 bytes)", u.Oversize())
	}
	if u.Peer() != addrOf(world) {
		t.Fatalf("peer %v after a datagram from %v", u.Peer(), addrOf(world))
	}

	// A batch of two leaves the rest for the next read; an over-long
	// datagram is discarded by the blocking read too.
	world.WriteToUDP(make([]byte, MaxFrame+1), to)
	for i := range 3 {
		world.WriteToUDP(frame(100, byte(20+i)), to)
	}
	time.Sleep(50 * time.Millisecond)
	if got := readBatch(t, u, 2); !reflectEqual(got, [][]byte{frame(100, 20), frame(100, 21)}) {
		t.Fatalf("a batch of at most 2: %d frames", len(got))
	}
	if got := readBatch(t, u, 2); !reflectEqual(got, [][]byte{frame(100, 22)}) {
		t.Fatalf("the frame left over: %d frames", len(got))
	}
	if u.Oversize() != 3 {
		t.Errorf("%d datagrams discarded, want 3", u.Oversize())
	}

	for i := range 20 {
		f := frame(MinFrame+i*70, byte(40+i))
		if _, err := u.Serve(bounce.Request{Tag: 2, Len: len(f), Write: true, Data: f}); err != nil {
			t.Fatal(err)
		}
		if d, from := expectDatagram(t, world); !bytes.Equal(d, f) || from != u.LocalAddr() {
			t.Fatalf("frame %d: a datagram of %d bytes from %v, want %d bytes from %v", i, len(d), from, len(f), u.LocalAddr())
		}
	}
	if u.TxNoPeer() != 1 {
		t.Errorf("%d frames dropped for want of a peer, want still 1", u.TxNoPeer())
	}

	// The first source is kept: another one's datagrams are dropped and
	// counted, in the blocking read and in the batch's polls alike, and
	// the peer's own still come through behind them.
	other := worldSocket(t)
	other.WriteToUDP(frame(70, 3), to)
	world.WriteToUDP(frame(71, 4), to)
	other.WriteToUDP(frame(72, 5), to)
	world.WriteToUDP(frame(73, 6), to)
	time.Sleep(50 * time.Millisecond)
	if got := readBatch(t, u, RxBatchMax); !reflectEqual(got, [][]byte{frame(71, 4), frame(73, 6)}) {
		t.Fatalf("from the peer and a second source: %d frames, want the peer's 2", len(got))
	}
	if u.Peer() != addrOf(world) || u.Foreign() != 2 {
		t.Fatalf("after a second source: peer %v, %d foreign; want %v, 2", u.Peer(), u.Foreign(), addrOf(world))
	}
	f := frame(80, 7)
	if _, err := u.Serve(bounce.Request{Tag: 3, Len: len(f), Write: true, Data: f}); err != nil {
		t.Fatal(err)
	}
	if d, _ := expectDatagram(t, world); !bytes.Equal(d, f) {
		t.Fatal("the learned peer did not get the frame sent after a second source wrote")
	}
	other.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _, err := other.ReadFromUDP(make([]byte, 2048)); err == nil {
		t.Fatalf("the second source got a datagram of %d bytes: it redirected the guest's traffic", n)
	}
}

// A configured peer gets every transmitted frame, and only its datagrams
// reach the guest: a stranger's are dropped and counted, even the first.
func TestUDPFixedPeer(t *testing.T) {
	peer, stranger := worldSocket(t), worldSocket(t)
	u := openTestUDP(t, addrOf(peer))
	to := net.UDPAddrFromAddrPort(u.LocalAddr())
	f := frame(80, 7)
	if _, err := u.Serve(bounce.Request{Tag: 1, Len: len(f), Write: true, Data: f}); err != nil {
		t.Fatal(err)
	}
	if d, _ := expectDatagram(t, peer); !bytes.Equal(d, f) {
		t.Fatal("the configured peer did not get the frame")
	}
	stranger.WriteToUDP(frame(90, 8), to)
	time.Sleep(20 * time.Millisecond) // the stranger's arrives first
	peer.WriteToUDP(frame(91, 9), to)
	if got := readBatch(t, u, 1); !reflectEqual(got, [][]byte{frame(91, 9)}) {
		t.Fatalf("a stranger's datagram then the peer's: %d frames, want the peer's only", len(got))
	}
	if u.Foreign() != 1 {
		t.Errorf("%d foreign datagrams counted, want 1", u.Foreign())
	}
	if u.Peer() != addrOf(peer) {
		t.Fatalf("peer %v after a datagram from another source, want still %v", u.Peer(), addrOf(peer))
	}
	if _, err := u.Serve(bounce.Request{Tag: 2, Len: len(f), Write: true, Data: f}); err != nil {
		t.Fatal(err)
	}
	if d, _ := expectDatagram(t, peer); !bytes.Equal(d, f) {
		t.Fatal("the configured peer did not get the second frame")
	}
	stranger.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _, err := stranger.ReadFromUDP(make([]byte, 2048)); err == nil {
		t.Fatalf("the other source got a datagram of %d bytes", n)
	}
}

// Close unblocks a read waiting for a datagram.
func TestUDPCloseUnblocksServe(t *testing.T) {
	u := openTestUDP(t, netip.AddrPort{})
	done := make(chan error, 1)
	go func() {
		_, err := u.Serve(receiveRequest(1, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	u.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still blocked after Close")
	}
}

func TestUDPConfigRefusesBadAddresses(t *testing.T) {
	p := netip.MustParseAddrPort
	taken := worldSocket(t)
	for _, c := range []struct {
		cfg  UDPConfig
		want string
	}{
		{UDPConfig{}, "no local address"},
		{UDPConfig{Local: loopback, Peer: p("127.0.0.1:0")}, "want an address and a port"},
		{UDPConfig{Local: loopback, Peer: p("0.0.0.0:7000")}, "want an address and a port"},
		{UDPConfig{Local: loopback, Peer: p("[::1]:7000")}, "family"},
		{UDPConfig{Local: p("[::1]:0"), Peer: p("127.0.0.1:7000")}, "family"},
		{UDPConfig{Local: addrOf(taken)}, "address already in use"},
	} {
		u, err := OpenUDP(c.cfg)
		if err == nil {
			u.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
	// An unspecified local address is dual-stack: a peer of either family.
	for _, peer := range []string{"127.0.0.1:7000", "[::1]:7000"} {
		if err := (UDPConfig{Local: p("[::]:0"), Peer: p(peer)}).Validate(); err != nil {
			t.Errorf("peer %s of [::]:0: %v", peer, err)
		}
	}
	// A 4-in-6 address is its IPv4 address.
	if err := (UDPConfig{Local: loopback, Peer: p("[::ffff:127.0.0.1]:7000")}).Validate(); err != nil {
		t.Errorf("a 4-in-6 peer of 127.0.0.1: %v", err)
	}
}
