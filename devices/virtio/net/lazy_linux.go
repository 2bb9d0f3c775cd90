package net

import (
	"errors"
	"fmt"
	stdnet "net"
	"net/netip"
	"strings"
	"sync"

	"github.com/ftkvm/ftkvm/bounce"
)

// FrameBackend is what a host network backend offers the NIC (*Tap,
// *UDP): Serve is its bounce.Backend.
type FrameBackend interface {
	Serve(bounce.Request) ([]byte, error)
	Close() error
}

// Lazy is a host backend opened at the first request, which the device
// makes once the guest's driver is up (its standing receive) and a replay
// never makes: an FT backup replaying the log never does, so the primary
// keeps the tap (which serves one process) or the UDP address until the
// backup goes live. Its Serve is the device's backend.
type Lazy struct {
	what string // "tap NAME", "udp LOCAL"
	open func() (FrameBackend, error)
	mu   sync.Mutex
	b    FrameBackend
	err  error
}

// NewLazy returns a Lazy that opens its backend with open; what names it
// in messages.
func NewLazy(what string, open func() (FrameBackend, error)) *Lazy {
	return &Lazy{what: what, open: open}
}

// ParseBackend reads a backend spec, "tap:NAME" or "udp:LOCAL[,PEER]"
// (each HOST:PORT, a name resolved now: ParseUDP), without opening
// anything.
func ParseBackend(spec string) (*Lazy, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "tap":
		if arg == "" {
			return nil, errors.New("want tap:NAME, with the interface's name")
		}
		return NewLazy("tap "+arg, func() (FrameBackend, error) { return OpenTap(arg) }), nil
	case "udp":
		cfg, err := ParseUDP(arg)
		if err != nil {
			return nil, err
		}
		return NewLazy("udp "+cfg.Local.String(), func() (FrameBackend, error) { return OpenUDP(cfg) }), nil
	}
	return nil, errors.New("want tap:NAME or udp:LOCAL[,PEER]")
}

// ParseUDP reads LOCAL[,PEER], each HOST:PORT (a name is resolved now); a
// LOCAL without a host (":7000") is every interface.
func ParseUDP(arg string) (UDPConfig, error) {
	var cfg UDPConfig
	local, peer, hasPeer := strings.Cut(arg, ",")
	addr := func(what, s string) (netip.AddrPort, error) {
		if s == "" {
			return netip.AddrPort{}, fmt.Errorf("want udp:LOCAL[,PEER], each HOST:PORT: %s is empty", what)
		}
		a, err := stdnet.ResolveUDPAddr("udp", s)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%s %q: want HOST:PORT: %w", what, s, err)
		}
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	var err error
	if cfg.Local, err = addr("LOCAL", local); err != nil {
		return cfg, err
	}
	if hasPeer {
		if cfg.Peer, err = addr("PEER", peer); err != nil {
			return cfg, err
		}
	}
	if !cfg.Local.Addr().IsValid() {
		cfg.Local = netip.AddrPortFrom(netip.IPv6Unspecified(), cfg.Local.Port())
	}
	return cfg, cfg.Validate()
}

// String names the backend ("tap NAME", "udp LOCAL").
func (l *Lazy) String() string { return l.what }

func (l *Lazy) get() (FrameBackend, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil && l.err == nil {
		l.b, l.err = l.open()
	}
	return l.b, l.err
}

// Attached reports whether the backend has been opened.
func (l *Lazy) Attached() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b != nil
}

// Serve opens the backend if need be and serves req: the NIC's backend.
func (l *Lazy) Serve(req bounce.Request) ([]byte, error) {
	b, err := l.get()
	if err != nil {
		return nil, err
	}
	return b.Serve(req)
}

// Send puts a frame on the network outside the guest (the gratuitous ARP
// a new primary sends). A UDP backend that knows no peer yet drops it,
// which is an error here.
func (l *Lazy) Send(frame []byte) error {
	_, err := l.Serve(bounce.Request{Tag: 0, Len: len(frame), Write: true, Data: frame})
	if b, _ := l.get(); err == nil && isUDPWithoutPeer(b) {
		return errors.New("no peer known yet (no PEER given, no datagram received): dropped")
	}
	return err
}

func isUDPWithoutPeer(b FrameBackend) bool {
	u, ok := b.(*UDP)
	return ok && !u.Peer().IsValid()
}

// Close closes the backend, if it was opened, and returns what a UDP
// socket dropped ("" if nothing).
func (l *Lazy) Close() (dropped string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil {
		return ""
	}
	if u, ok := l.b.(*UDP); ok && (u.TxNoPeer() > 0 || u.Oversize() > 0 || u.Foreign() > 0) {
		dropped = fmt.Sprintf("%s: %d frames sent before any peer was known were dropped, %d datagrams too long (or empty) for a frame discarded, %d datagrams from other sources than the peer %v dropped",
			l.what, u.TxNoPeer(), u.Oversize(), u.Foreign(), u.Peer())
	}
	l.b.Close()
	return dropped
}
