package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

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
	nic      *vnet.Lazy // the --net backend; nil without one
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
		img, err := blk.OpenImage(o.disk, o.diskGen)
		switch {
		case errors.Is(err, blk.ErrImageTooSmall):
			return nil, fmt.Errorf("--disk %s: %w", o.disk, err)
		case err != nil:
			return nil, fmt.Errorf("--disk: %w", err)
		}
		d.img, d.imgBack, d.identity = img.File, img.Backend, img.Identity
	}
	if o.netSpec != "" {
		nic, err := vnet.ParseBackend(o.netSpec)
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
		if _, err := vm.AddVirtio(vnet.Attachment(vnet.Config{MAC: d.mac}, d.nic.Serve)); err != nil {
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
	if err := d.nic.Send(frame); err != nil {
		fmt.Fprintf(log, "ftvm: going live: the %s of %s on %s failed: %v\n", what, net.HardwareAddr(d.mac[:]), d.nic, err)
		return
	}
	fmt.Fprintf(log, "ftvm: going live: sent a %s of %s on %s\n", what, net.HardwareAddr(d.mac[:]), d.nic)
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
		if dropped := d.nic.Close(); dropped != "" {
			fmt.Fprintf(os.Stderr, "ftvm: %s\n", dropped)
		}
	}
}
