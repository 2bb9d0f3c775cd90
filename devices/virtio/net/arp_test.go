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
