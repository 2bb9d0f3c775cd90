package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
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

func (o *deviceOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.disk, "disk", "", "raw disk image for a virtio-blk disk (the guest's /dev/vda)")
	fs.StringVar(&o.diskMode, "disk-mode", "shared", "FT disk mode: 'shared' (one image both hosts reach: a backup never reads or writes it until it goes live) or 'nonshared' (each host has its own copy: a backup performs the guest's writes on it as it replays)")
	fs.StringVar(&o.diskGen, "disk-generation", "", "the disk's identity in the log header instead of its SHA-256 (which reads the whole image at start): a replay or backup must give the same")
	fs.StringVar(&o.netSpec, "net", "", "virtio-net backend: 'tap:NAME' (a tap interface, attached at the first frame: a backup attaches it when it goes live; make it persistent so that it outlives the primary)")
	fs.StringVar(&o.mac, "mac", "52:54:00:f7:00:01", "the guest NIC's MAC address")
	fs.StringVar(&o.guestIP, "guest-ip", "", "the guest's IPv4 address, for the gratuitous ARP a backup sends on the tap when it goes live (without it: a RARP announcement of the MAC, which needs no address)")
	fs.StringVar(&o.work, "work", "", "the example guest's workload: 'disk', 'net' or 'diskbench' (adds ftkvm.work= to the command line; needs --disk or --net)")
}

// guestDevices are the opened devices' backends, shared by every VM the
// command builds (a replay builds one, an FT pair side one).
type guestDevices struct {
	img      *os.File
	imgBack  *blk.FileBackend
	identity string
	ownCopy  bool
	tap      *lazyTap
	mac      [6]byte
	ip       net.IP // the guest's, for the gratuitous ARP (nil: RARP)
}

// open checks the flags and opens the disk image; the tap is attached
// lazily.
func (o *deviceOptions) open() (*guestDevices, error) {
	d := &guestDevices{}
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
				f.Close()
				return nil, fmt.Errorf("--disk: hashing %s: %w", o.disk, err)
			}
			d.identity += " sha256=" + hex.EncodeToString(h.Sum(nil))
		}
	}
	switch {
	case o.netSpec == "":
	case strings.HasPrefix(o.netSpec, "tap:") && len(o.netSpec) > 4:
		d.tap = &lazyTap{name: o.netSpec[4:]}
	default:
		return nil, usageError{fmt.Errorf("--net %q: want tap:NAME", o.netSpec)}
	}
	if d.tap != nil {
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
		if d.tap == nil {
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
		if _, err := vm.AddVirtioBlk(blk.Config{Capacity: d.imgBack.Capacity(), ID: "ftkvm-disk0"}, d.imgBack.Backend(),
			vmm.DiskOptions{Identity: d.identity, OwnCopy: d.ownCopy}); err != nil {
			return err
		}
	}
	if d.tap != nil {
		if _, err := vm.AddVirtioNet(vnet.Config{MAC: d.mac}, d.tap.serve); err != nil {
			return err
		}
	}
	return nil
}

// announce tells the network that the guest's MAC is now on this host's
// tap (a backup that went live): a gratuitous ARP with --guest-ip, else a
// RARP announcement. Switches learn the new port from either.
func (d *guestDevices) announce(log io.Writer) {
	frame, what := vnet.RARPAnnounce(d.mac), "RARP announcement"
	if d.ip != nil {
		frame, what = vnet.GratuitousARP(d.mac, [4]byte(d.ip)), "gratuitous ARP for "+d.ip.String()
	}
	if err := d.tap.send(frame); err != nil {
		fmt.Fprintf(log, "ftvm: going live: the %s of %s on tap %s failed: %v\n", what, net.HardwareAddr(d.mac[:]), d.tap.name, err)
		return
	}
	fmt.Fprintf(log, "ftvm: going live: sent a %s of %s on tap %s\n", what, net.HardwareAddr(d.mac[:]), d.tap.name)
}

// close releases the image and the tap (after the last VM's run).
func (d *guestDevices) close() {
	if d == nil {
		return
	}
	if d.img != nil {
		d.img.Close()
	}
	if d.tap != nil {
		d.tap.close()
	}
}

// lazyTap attaches to its tap interface at the first frame: an FT backup
// replaying the log never does, so the primary keeps the interface (a tap
// serves one process) until the backup goes live.
type lazyTap struct {
	name string
	mu   sync.Mutex
	tap  *vnet.Tap
	err  error
}

func (l *lazyTap) get() (*vnet.Tap, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tap == nil && l.err == nil {
		l.tap, l.err = vnet.OpenTap(l.name)
	}
	return l.tap, l.err
}

func (l *lazyTap) serve(req bounce.Request) ([]byte, error) {
	t, err := l.get()
	if err != nil {
		return nil, err
	}
	return t.Serve(req)
}

// send puts a frame on the interface outside the guest (the gratuitous
// ARP a new primary sends).
func (l *lazyTap) send(frame []byte) error {
	_, err := l.serve(bounce.Request{Tag: 0, Len: len(frame), Write: true, Data: frame})
	return err
}

func (l *lazyTap) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tap != nil {
		l.tap.Close()
	}
}
