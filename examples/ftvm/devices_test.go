package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	vnet "github.com/ftkvm/ftkvm/devices/virtio/net"
)

func TestDeviceOptions(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	content := []byte(strings.Repeat("ftkvm disk\n", 93)) // 1023 bytes: one whole sector
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o    deviceOptions
		want string // error substring; "" for none
	}{
		{deviceOptions{diskMode: "shared"}, ""},
		{deviceOptions{diskMode: "mirrored"}, "want shared or nonshared"},
		{deviceOptions{diskMode: "shared", disk: img + ".missing"}, "no such file"},
		{deviceOptions{diskMode: "shared", netSpec: "vde:x"}, "want tap:NAME"},
		{deviceOptions{diskMode: "shared", netSpec: "tap:"}, "want tap:NAME"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:"}, "LOCAL is empty"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1"}, "LOCAL \"127.0.0.1\": want HOST:PORT"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1:99999"}, "want HOST:PORT"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1:7000,"}, "PEER is empty"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1:7000,127.0.0.1:0"}, "want an address and a port"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1:7000,[::1]:7001"}, "family"},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1:7000,127.0.0.1:7001,x"}, "PEER \"127.0.0.1:7001,x\""},
		{deviceOptions{diskMode: "shared", netSpec: "udp:127.0.0.1:7000", mac: "52:54:00:f7:00:01", work: "net"}, ""},
		{deviceOptions{diskMode: "shared", netSpec: "udp::7000,127.0.0.1:7001", mac: "52:54:00:f7:00:01"}, ""},
		{deviceOptions{diskMode: "shared", netSpec: "tap:t0", mac: "01:00:5e:00:00:01x"}, "--mac"},
		{deviceOptions{diskMode: "shared", netSpec: "tap:t0", mac: "52:54:00:f7:00:01", guestIP: "fe80::1"}, "want an IPv4 address"},
		{deviceOptions{diskMode: "shared", work: "disk"}, "needs --disk"},
		{deviceOptions{diskMode: "shared", work: "diskbench"}, "needs --disk"},
		{deviceOptions{diskMode: "shared", work: "net"}, "needs --net"},
		{deviceOptions{diskMode: "shared", work: "tetris", disk: img}, "want disk, diskbench or net"},
		{deviceOptions{diskMode: "nonshared", disk: img, work: "disk"}, ""},
	} {
		d, err := c.o.open()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.o, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want one containing %q", c.o, err, c.want)
		}
		d.close()
	}

	// A flag refused after the image was opened leaves it closed.
	if _, err := (&deviceOptions{diskMode: "shared", disk: img, work: "tetris"}).open(); err == nil {
		t.Fatal("--work tetris accepted")
	}
	if n := openFDs(t, img); n != 0 {
		t.Errorf("%d descriptors of the image are still open after the refused flags", n)
	}

	// The identity the log header pins: size and content hash, or the
	// generation the user gives.
	d, err := (&deviceOptions{diskMode: "nonshared", disk: img}).open()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	sum := sha256.Sum256(content[:512])
	if want := fmt.Sprintf("size=512 sha256=%x", sum); d.identity != want || !d.ownCopy {
		t.Errorf("identity %q (own copy %v), want %q (own copy)", d.identity, d.ownCopy, want)
	}
	g, err := (&deviceOptions{diskMode: "shared", disk: img, diskGen: "7"}).open()
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	if g.identity != "size=512 generation=7" || g.ownCopy {
		t.Errorf("identity %q (own copy %v), want size=512 generation=7 (shared)", g.identity, g.ownCopy)
	}
}

// The UDP backend binds its address only at the NIC's first request (the
// standing receive of a live guest, or the announcement of a backup going
// live), never at open: a replaying backup must leave it to the primary.
func TestUDPBackendAttachesLazily(t *testing.T) {
	world, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer world.Close()
	local := freeUDPPort(t)
	d, err := (&deviceOptions{diskMode: "shared", mac: "52:54:00:f7:00:01", guestIP: "10.0.2.15",
		netSpec: "udp:" + local + "," + world.LocalAddr().String()}).open()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if d.nic.Attached() {
		t.Fatal("the backend was opened with the flags")
	}
	if c, err := net.ListenPacket("udp", local); err != nil {
		t.Fatalf("%s is taken before the first frame: %v", local, err)
	} else {
		c.Close()
	}

	var log bytes.Buffer
	d.announce(&log)
	if !d.nic.Attached() {
		t.Fatal("the backend is still closed after a frame")
	}
	if c, err := net.ListenPacket("udp", local); err == nil {
		c.Close()
		t.Fatalf("%s is free after the first frame", local)
	}
	world.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	n, from, err := world.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("the announcement did not arrive: %v (%s)", err, log.String())
	}
	if want := vnet.GratuitousARP(d.mac, [4]byte{10, 0, 2, 15}); !bytes.Equal(buf[:n], want) || from.String() != local {
		t.Errorf("got %d bytes from %v, want the guest's gratuitous ARP from %s", n, from, local)
	}
	if !strings.Contains(log.String(), "sent a gratuitous ARP for 10.0.2.15 of 52:54:00:f7:00:01 on udp "+local) {
		t.Errorf("log: %q", log.String())
	}

	// And frames come in through the device's receive.
	to, _ := net.ResolveUDPAddr("udp", local)
	f := bytes.Repeat([]byte{0xab}, 60)
	world.WriteToUDP(f, to)
	batch, err := d.nic.Serve(bounce.Request{Tag: 1, Len: vnet.RecordLen, Arg: 1, Upto: true})
	if err != nil || !bytes.Equal(batch, vnet.AppendFrame(nil, f)) {
		t.Errorf("receive: %d bytes, %v; want the frame sent", len(batch), err)
	}

	d.close()
	if c, err := net.ListenPacket("udp", local); err != nil {
		t.Errorf("%s still taken after close: %v", local, err)
	} else {
		c.Close()
	}
}

// Without PEER, the announcement of a backup going live has nowhere to
// go until a datagram arrives, and says so.
func TestUDPAnnounceWithoutPeer(t *testing.T) {
	d, err := (&deviceOptions{diskMode: "shared", mac: "52:54:00:f7:00:01", netSpec: "udp:127.0.0.1:0"}).open()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	var log bytes.Buffer
	d.announce(&log)
	if !strings.Contains(log.String(), "RARP announcement of 52:54:00:f7:00:01 on udp 127.0.0.1:0 failed: no peer known yet") {
		t.Errorf("log: %q", log.String())
	}
}

// freeUDPPort returns a loopback UDP address nothing is bound to.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// openFDs counts this process's descriptors open on path.
func openFDs(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}
