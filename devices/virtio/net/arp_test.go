package net

import (
	"bytes"
	"testing"
)

// The announcement's bytes, field by field (RFC 826 packet layout, RFC
// 5227 2.3 announcement: an ARP request with the sender's address as both
// sender and target protocol address and a zero target hardware address).
func TestGratuitousARP(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}
	ip := [4]byte{192, 0, 2, 7}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
		0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, // source: the guest
		0x08, 0x06, // EtherType: ARP
		0x00, 0x01, // ar$hrd: Ethernet
		0x08, 0x00, // ar$pro: IPv4
		6,          // ar$hln
		4,          // ar$pln
		0x00, 0x01, // ar$op: request
		0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, // ar$sha
		192, 0, 2, 7, // ar$spa
		0, 0, 0, 0, 0, 0, // ar$tha: zero
		192, 0, 2, 7, // ar$tpa: the sender's own address
	}
	want = append(want, make([]byte, 60-len(want))...) // padding to the Ethernet minimum
	got := GratuitousARP(mac, ip)
	if !bytes.Equal(got, want) {
		t.Fatalf("GratuitousARP =\n% x\nwant\n% x", got, want)
	}
	if len(got) < MinFrame || len(got) > MaxFrame {
		t.Fatalf("%d bytes: not a frame the device would send", len(got))
	}
}

func TestRARPAnnounce(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0x00, 0x01, 0x02, 0x03}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
		0x52, 0x54, 0x00, 0x01, 0x02, 0x03, // source: the guest
		0x80, 0x35, // EtherType: RARP
		0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet, IPv4, address lengths
		0x00, 0x03, // op: request reverse
		0x52, 0x54, 0x00, 0x01, 0x02, 0x03, // sender hardware address
		0, 0, 0, 0, // sender protocol address: unknown
		0x52, 0x54, 0x00, 0x01, 0x02, 0x03, // target hardware address
		0, 0, 0, 0, // target protocol address: asked for
	}
	want = append(want, make([]byte, 60-len(want))...)
	if got := RARPAnnounce(mac); !bytes.Equal(got, want) {
		t.Fatalf("RARPAnnounce =\n% x\nwant\n% x", got, want)
	}
}
