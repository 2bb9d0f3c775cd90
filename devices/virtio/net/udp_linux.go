package net

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/bounce"
)

// UDP is a frame socket: a UDP socket each of whose datagrams is one
// Ethernet frame, as QEMU's -netdev dgram. It is the device's backend where
// no tap can be made (no CAP_NET_ADMIN, a container): the other end is a
// program of the user's, a userspace switch, or another VM's socket.
// Serve is the device's backend; its methods are safe for concurrent use.
//
// The socket talks to one peer. Given one, it accepts only that peer's
// datagrams. Without one, it learns the source of the first datagram
// received and keeps it: from then on only that source's datagrams are
// accepted. Datagrams from any other source are dropped and counted
// (Foreign), so that whoever can reach the port can neither inject frames
// into the guest nor redirect its traffic. Transmitted frames go to the
// peer, and are dropped and counted (TxNoPeer) while none is known. A
// source address is not authentication: beyond a private link, put the
// socket behind a firewall. Like a Tap, it is for whoever runs the device
// live: a replaying FT backup must not bind the primary's address, so
// open it at the first request (as ftvm does) or when going live.
type UDP struct {
	conn     *net.UDPConn
	local    netip.AddrPort
	fixed    bool // the peer was given: never learned
	mu       sync.Mutex
	peer     netip.AddrPort
	txNoPeer atomic.Uint64
	foreign  atomic.Uint64
	rx       batcher
}

// UDPConfig says where a frame socket binds and sends.
type UDPConfig struct {
	// Local is the address the socket binds; port 0 lets the kernel
	// choose (LocalAddr says which).
	Local netip.AddrPort
	// Peer is the one address datagrams are accepted from and frames are
	// sent to. The zero AddrPort: the source of the first datagram
	// received, kept from then on. A given peer needs an address and a
	// port, and an address of Local's family unless Local's address is
	// unspecified (a dual-stack socket).
	Peer netip.AddrPort
}

// Validate checks the addresses without binding anything.
func (c UDPConfig) Validate() error {
	local, peer := c.Local.Addr().Unmap(), c.Peer.Addr().Unmap()
	switch {
	case !local.IsValid():
		return fmt.Errorf("net: udp: no local address")
	case !peer.IsValid():
		return nil
	case c.Peer.Port() == 0 || peer.IsUnspecified():
		return fmt.Errorf("net: udp: peer %s: want an address and a port to send to", c.Peer)
	case !local.IsUnspecified() && local.Is4() != peer.Is4():
		return fmt.Errorf("net: udp: peer %s is not of the local address %s's family", c.Peer, local)
	}
	return nil
}

// OpenUDP binds the frame socket c describes.
func OpenUDP(c UDPConfig) (*UDP, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	local := netip.AddrPortFrom(c.Local.Addr().Unmap(), c.Local.Port())
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
	if err != nil {
		return nil, fmt.Errorf("net: udp: %w", err)
	}
	u := &UDP{conn: conn, local: conn.LocalAddr().(*net.UDPAddr).AddrPort(), fixed: c.Peer.IsValid()}
	if u.fixed {
		u.peer = netip.AddrPortFrom(c.Peer.Addr().Unmap(), c.Peer.Port())
	}
	return u, nil
}

// LocalAddr is the address the socket is bound to (with the port the
// kernel chose for port 0).
func (u *UDP) LocalAddr() netip.AddrPort { return u.local }

// Peer is where transmitted frames go now; the zero AddrPort while no
// peer was given and no datagram has arrived.
func (u *UDP) Peer() netip.AddrPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.peer
}

// Close closes the socket; a Serve waiting for a datagram returns an
// error.
func (u *UDP) Close() error { return u.conn.Close() }

// Oversize is the number of datagrams Serve discarded as frames longer
// than MaxFrame (or empty).
func (u *UDP) Oversize() uint64 { return u.rx.oversize.Load() }

// Foreign is the number of datagrams Serve dropped because they came from
// another source than the peer.
func (u *UDP) Foreign() uint64 { return u.foreign.Load() }

// TxNoPeer is the number of frames dropped because no peer was known yet.
func (u *UDP) TxNoPeer() uint64 { return u.txNoPeer.Load() }

// Serve implements bounce.Backend: a write sends req.Data, one frame, to
// the peer as one datagram (or drops it while there is none); a read
// blocks until a datagram arrives and returns a receive batch of it and
// the datagrams already waiting behind it (see AppendFrame).
func (u *UDP) Serve(req bounce.Request) ([]byte, error) {
	if req.Write {
		peer := u.Peer()
		if !peer.IsValid() {
			u.txNoPeer.Add(1)
			return nil, nil
		}
		if _, err := u.conn.WriteToUDPAddrPort(req.Data, peer); err != nil {
			return nil, fmt.Errorf("net: udp %s: %w", u.local, err)
		}
		return nil, nil
	}
	return u.rx.fill(req, u.read, u.poll)
}

// accept says whether a datagram from this source is the peer's; the
// first source is learned as the peer if none was given. Zones are
// ignored: a link-local peer is given with or without one.
func (u *UDP) accept(from netip.AddrPort) bool {
	from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.peer.IsValid() && !u.fixed && from.IsValid() {
		u.peer = from
	}
	ok := from == netip.AddrPortFrom(u.peer.Addr().WithZone(""), u.peer.Port())
	if !ok {
		u.foreign.Add(1)
	}
	return ok
}

// read blocks until a datagram from the peer arrives. Its buffer has a
// byte more than MaxFrame, so that a longer datagram (cut to fit) is seen
// as too long.
func (u *UDP) read() ([]byte, error) {
	buf := make([]byte, MaxFrame+1)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, fmt.Errorf("net: udp %s: %w", u.local, err)
		}
		if u.accept(from) {
			return buf[:n], nil
		}
	}
}

// poll returns a datagram from the peer already waiting, or nil:
// non-blocking recvfrom(2)s until one is the peer's or none is waiting.
func (u *UDP) poll() []byte {
	rc, err := u.conn.SyscallConn()
	if err != nil {
		return nil
	}
	buf := make([]byte, MaxFrame+1)
	for {
		var n int
		var from unix.Sockaddr
		rc.Read(func(fd uintptr) bool {
			n, from, err = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return true // one attempt: EAGAIN means nothing is waiting
		})
		if err != nil || n < 0 {
			return nil
		}
		var src netip.AddrPort
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			src = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *unix.SockaddrInet6:
			src = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		}
		if u.accept(src) {
			return buf[:n]
		}
	}
}

// Backend returns Serve as a bounce.Backend, for bounce.NewEngine.
func (u *UDP) Backend() bounce.Backend { return u.Serve }
