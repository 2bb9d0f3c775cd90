package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio/blk"
	vnet "github.com/ftkvm/ftkvm/devices/virtio/net"
	"github.com/ftkvm/ftkvm/vmm"
)

// deviceOptions are the flags for the guest's virtio disk and network.
type deviceOptions struct {
	disk, diskMode, diskGen string
	netSpec, mac            string
	guestIP                 string
	work                    string
}

func (o *deviceOptions) register(fs *flag.FlagSet, scope flagScope) {
	fs.StringVar(&o.disk, "disk", "", "raw disk image for a virtio-blk disk (the guest's /dev/vda)")
	o.diskMode = "shared"
	if scope >= scopeLog {
		fs.StringVar(&o.diskMode, "disk-mode", "shared", "FT disk mode: 'shared' (one image both hosts reach: a backup never reads or writes it until it goes live) or 'nonshared' (each host has its own copy: a backup performs the guest's writes on it as it replays; a replay onto a copy of the starting image rebuilds the disk)")
		fs.StringVar(&o.diskGen, "disk-generation", "", "the disk's identity in the log header instead of its SHA-256 (which reads the whole image at start): a replay or backup must give the same")
	}
	fs.StringVar(&o.netSpec, "net", "", "virtio-net backend, attached at the first frame (a backup attaches it when it goes live):\n"+
		"'tap:NAME' a tap interface (make it persistent so that it outlives the primary);\n"+
		"'udp:LOCAL[,PEER]' a UDP socket bound to LOCAL (HOST:PORT), one Ethernet frame per datagram, as QEMU's -netdev dgram:\n"+
		"with PEER, only PEER's datagrams are taken and frames go to PEER; without it, the source of the first datagram\n"+
		"received becomes the peer and is kept (frames are dropped until one arrives); other sources' datagrams are dropped\n"+
		"and counted. A source address is no authentication: outside a private link, use a firewall")
	fs.StringVar(&o.mac, "mac", "52:54:00:f7:00:01", "the guest NIC's MAC address")
	if scope >= scopeLog { // record and replay take a pair's guest flags unchanged
		fs.StringVar(&o.guestIP, "guest-ip", "", "the guest's IPv4 address, for the gratuitous ARP a backup sends on --net when it goes live (without it: a RARP announcement of the MAC, which needs no address)")
	}
	fs.StringVar(&o.work, "work", "", "the example guest's workload: 'disk', 'net' or 'diskbench' (adds ftkvm.work= to the command line; needs --disk or --net)")
}

// guestDevices are the opened devices' backends, shared by every VM the
// command builds (a replay builds one, an FT pair side one).
type guestDevices struct {
	img      *os.File
	imgBack  *blk.FileBackend
	identity string
	ownCopy  bool
	nic      *lazyNIC // the --net backend; nil without one
	mac      [6]byte
	ip       net.IP // the guest's, for the gratuitous ARP (nil: RARP)
}

// open checks the flags and opens the disk image; the network backend is
// attached lazily.
func (o *deviceOptions) open() (_ *guestDevices, err error) {
	d := &guestDevices{}
	defer func() {
		if err != nil {
			d.close() // an image opened before a later flag's error
		}
	}()
	switch o.diskMode {
	case "shared":
	case "nonshared":
		d.ownCopy = true
	default:
		return nil, usageError{fmt.Errorf("--disk-mode %q: want shared or nonshared", o.diskMode)}
	}
	if o.disk != "" {
		f, err := os.OpenFile(o.disk, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("--disk: %w", err)
		}
		b, err := blk.NewFileBackend(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("--disk: %w", err)
		}
		if b.Capacity() == 0 {
			f.Close()
			return nil, fmt.Errorf("--disk %s: smaller than one %d-byte sector", o.disk, blk.SectorSize)
		}
		d.img, d.imgBack = f, b
		d.identity = fmt.Sprintf("size=%d", b.Capacity())
		if o.diskGen != "" {
			d.identity += " generation=" + o.diskGen
		} else {
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, 0, int64(b.Capacity()))); err != nil {
				return nil, fmt.Errorf("--disk: hashing %s: %w", o.disk, err)
			}
			d.identity += " sha256=" + hex.EncodeToString(h.Sum(nil))
		}
	}
	if o.netSpec != "" {
		nic, err := parseNet(o.netSpec)
		if err != nil {
			return nil, usageError{fmt.Errorf("--net %q: %w", o.netSpec, err)}
		}
		d.nic = nic
	}
	if d.nic != nil {
		hw, err := net.ParseMAC(o.mac)
		if err != nil || len(hw) != 6 {
			return nil, usageError{fmt.Errorf("--mac %q: want six hex bytes like 52:54:00:f7:00:01", o.mac)}
		}
		copy(d.mac[:], hw)
		if o.guestIP != "" {
			if d.ip = net.ParseIP(o.guestIP).To4(); d.ip == nil {
				return nil, usageError{fmt.Errorf("--guest-ip %q: want an IPv4 address", o.guestIP)}
			}
		}
	}
	switch o.work {
	case "":
	case "disk", "diskbench":
		if d.img == nil {
			return nil, usageError{fmt.Errorf("--work %s needs --disk", o.work)}
		}
	case "net":
		if d.nic == nil {
			return nil, usageError{errors.New("--work net needs --net")}
		}
	default:
		return nil, usageError{fmt.Errorf("--work %q: want disk, diskbench or net", o.work)}
	}
	return d, nil
}

// add puts the devices into vm (before the kernel is loaded: the VM adds
// their virtio_mmio.device= options to the command line).
func (d *guestDevices) add(vm *vmm.VM) error {
	if d == nil {
		return nil
	}
	if d.imgBack != nil {
		if _, err := vm.AddVirtio(blk.Attachment(blk.Config{Capacity: d.imgBack.Capacity(), ID: "ftkvm-disk0"}, d.imgBack.Backend(),
			blk.DiskOptions{Identity: d.identity, OwnCopy: d.ownCopy})); err != nil {
			return err
		}
	}
	if d.nic != nil {
		if _, err := vm.AddVirtio(vnet.Attachment(vnet.Config{MAC: d.mac}, d.nic.serve)); err != nil {
			return err
		}
	}
	return nil
}

// announce tells the network that the guest's MAC is now on this host's
// backend (a backup that went live): a gratuitous ARP with --guest-ip, else a
// RARP announcement. Switches learn the new port from either.
func (d *guestDevices) announce(log io.Writer) {
	frame, what := vnet.RARPAnnounce(d.mac), "RARP announcement"
	if d.ip != nil {
		frame, what = vnet.GratuitousARP(d.mac, [4]byte(d.ip)), "gratuitous ARP for "+d.ip.String()
	}
	if err := d.nic.send(frame); err != nil {
		fmt.Fprintf(log, "ftvm: going live: the %s of %s on %s failed: %v\n", what, net.HardwareAddr(d.mac[:]), d.nic.what, err)
		return
	}
	fmt.Fprintf(log, "ftvm: going live: sent a %s of %s on %s\n", what, net.HardwareAddr(d.mac[:]), d.nic.what)
}

// close releases the image and the network backend (after the last VM's
// run).
func (d *guestDevices) close() {
	if d == nil {
		return
	}
	if d.img != nil {
		d.img.Close()
	}
	if d.nic != nil {
		d.nic.close()
	}
}

// parseNet reads --net's value (without opening anything).
func parseNet(spec string) (*lazyNIC, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "tap":
		if arg == "" {
			return nil, errors.New("want tap:NAME, with the interface's name")
		}
		return &lazyNIC{what: "tap " + arg, open: func() (frameBackend, error) { return vnet.OpenTap(arg) }}, nil
	case "udp":
		cfg, err := parseUDP(arg)
		if err != nil {
			return nil, err
		}
		return &lazyNIC{what: "udp " + cfg.Local.String(), open: func() (frameBackend, error) { return vnet.OpenUDP(cfg) }}, nil
	}
	return nil, errors.New("want tap:NAME or udp:LOCAL[,PEER]")
}

// parseUDP reads LOCAL[,PEER], each HOST:PORT (a name is resolved now).
func parseUDP(arg string) (vnet.UDPConfig, error) {
	var cfg vnet.UDPConfig
	local, peer, hasPeer := strings.Cut(arg, ",")
	addr := func(what, s string) (netip.AddrPort, error) {
		if s == "" {
			return netip.AddrPort{}, fmt.Errorf("want udp:LOCAL[,PEER], each HOST:PORT: %s is empty", what)
		}
		a, err := net.ResolveUDPAddr("udp", s)
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
		// ":7000" resolves to no address: every interface.
		cfg.Local = netip.AddrPortFrom(netip.IPv6Unspecified(), cfg.Local.Port())
	}
	return cfg, cfg.Validate()
}

// frameBackend is what a network backend offers the NIC (vnet.Tap,
// vnet.UDP).
type frameBackend interface {
	Serve(bounce.Request) ([]byte, error)
	Close() error
}

// lazyNIC opens its backend at the first request, which the device makes
// once the guest's driver is up (its standing receive) and a replay never
// makes: an FT backup replaying the log never does, so the primary keeps
// the tap (which serves one process) or the UDP address until the backup
// goes live.
type lazyNIC struct {
	what string // for messages: "tap NAME", "udp LOCAL"
	open func() (frameBackend, error)
	mu   sync.Mutex
	b    frameBackend
	err  error
}

func (l *lazyNIC) get() (frameBackend, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil && l.err == nil {
		l.b, l.err = l.open()
	}
	return l.b, l.err
}

// attached reports whether the backend has been opened.
func (l *lazyNIC) attached() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b != nil
}

func (l *lazyNIC) serve(req bounce.Request) ([]byte, error) {
	b, err := l.get()
	if err != nil {
		return nil, err
	}
	return b.Serve(req)
}

// send puts a frame on the network outside the guest (the gratuitous
// ARP a new primary sends).
func (l *lazyNIC) send(frame []byte) error {
	_, err := l.serve(bounce.Request{Tag: 0, Len: len(frame), Write: true, Data: frame})
	if b, _ := l.get(); err == nil && isUDPWithoutPeer(b) {
		return errors.New("no peer known yet (no PEER given, no datagram received): dropped")
	}
	return err
}

func isUDPWithoutPeer(b frameBackend) bool {
	u, ok := b.(*vnet.UDP)
	return ok && !u.Peer().IsValid()
}

// close closes the backend and reports what a UDP socket dropped.
func (l *lazyNIC) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil {
		return
	}
	if u, ok := l.b.(*vnet.UDP); ok && (u.TxNoPeer() > 0 || u.Oversize() > 0 || u.Foreign() > 0) {
		fmt.Fprintf(os.Stderr, "ftvm: %s: %d frames sent before any peer was known were dropped, %d datagrams too long (or empty) for a frame discarded, %d datagrams from other sources than the peer %v dropped\n",
			l.what, u.TxNoPeer(), u.Oversize(), u.Foreign(), u.Peer())
	}
	l.b.Close()
}
