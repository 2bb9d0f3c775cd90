package e2e

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
)

// TestLinuxNetUDP runs the example guest's network on ftvm's UDP backend
// (--net udp:LOCAL,PEER), with the test as the other end of the wire: an
// ARP request for the guest's address, sent to LOCAL as one datagram, must
// come back to PEER as the guest's ARP reply. No tap and no root: frames
// go both ways through the guest's driver and the backend.
func TestLinuxNetUDP(t *testing.T) {
	dir := guestDir(t)
	bin := buildFtvm(t)
	wire, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer wire.Close()
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	vmAddr := l.LocalAddr().(*net.UDPAddr)
	l.Close() // a free port for the VM's side
	guestMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0xf7, 0x00, 0x09}
	s := startSide(t, bin, "run", "--guest-dir", dir, "--work", "net", "--mac", guestMAC.String(),
		"--net", "udp:"+vmAddr.String()+","+wire.LocalAddr().String())
	waitNetUp(t, s, 4*time.Minute)

	hostMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
	hostIP, gIP := net.IPv4(10, 0, 2, 1).To4(), net.ParseIP(guestIP).To4()
	request := arpFrame(1, hostMAC, hostIP, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, nil, gIP)
	want := arpFrame(2, guestMAC, gIP, hostMAC, hostMAC, hostIP)[:42] // the guest's padding is its own

	up := time.Now()
	deadline := up.Add(30 * time.Second)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		if _, err := wire.WriteToUDP(request, vmAddr); err != nil {
			t.Fatal(err)
		}
		wire.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := wire.ReadFromUDP(buf)
			if err != nil {
				break // resend
			}
			if !from.IP.Equal(vmAddr.IP) || from.Port != vmAddr.Port {
				t.Fatalf("a datagram from %v, want only the VM's %v", from, vmAddr)
			}
			if n >= len(want) && bytes.Equal(buf[:len(want)], want) {
				t.Logf("the guest answered an ARP request over UDP, %v after its network came up", time.Since(up).Round(time.Millisecond))
				return
			}
		}
	}
	t.Fatalf("no ARP reply from the guest within 30 s\n%s", fttest.Tail(s.stderr.String(), 10))
}

// arpFrame builds an Ethernet ARP frame for IPv4 (RFC 826), op 1 a request
// or 2 a reply, from src to dst at the Ethernet layer; targetMAC nil is all
// zeros (a request's unknown). Padded to the 60-byte minimum.
func arpFrame(op uint16, src net.HardwareAddr, srcIP net.IP, dst, targetMAC net.HardwareAddr, targetIP net.IP) []byte {
	f := make([]byte, 60)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], 0x0806) // ARP
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], op)
	copy(f[22:28], src)
	copy(f[28:32], srcIP)
	copy(f[32:38], targetMAC)
	copy(f[38:42], targetIP)
	return f
}
