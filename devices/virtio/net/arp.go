package net

import "encoding/binary"

// Ethernet and ARP constants (RFC 826; RFC 5227, 2.3).
const (
	etherTypeARP  = 0x0806
	arpHTypeEther = 1
	arpPTypeIPv4  = 0x0800
	arpOpRequest  = 1
	arpLen        = 28
	minEtherFrame = 60 // without the FCS; shorter frames are padded
)

// GratuitousARP returns an ARP announcement (RFC 5227, 2.3) for a host
// with Ethernet address mac and IPv4 address ip: a broadcast ARP request
// whose sender and target protocol addresses are both ip and whose target
// hardware address is zero, padded with zeros to the 60-byte Ethernet
// minimum. Switches learn mac's new port from its source address, and
// hosts update their ARP caches. The VMM sends it for the guest when a
// backup goes live.
func GratuitousARP(mac [6]byte, ip [4]byte) []byte {
	f := make([]byte, minEtherFrame)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // destination: broadcast
	copy(f[6:12], mac[:])                                    // source
	binary.BigEndian.PutUint16(f[12:], etherTypeARP)
	a := f[14 : 14+arpLen]
	binary.BigEndian.PutUint16(a[0:], arpHTypeEther)
	binary.BigEndian.PutUint16(a[2:], arpPTypeIPv4)
	a[4], a[5] = 6, 4 // hardware and protocol address lengths
	binary.BigEndian.PutUint16(a[6:], arpOpRequest)
	copy(a[8:14], mac[:]) // sender hardware address
	copy(a[14:18], ip[:]) // sender protocol address
	// a[18:24], the target hardware address, stays zero.
	copy(a[24:28], ip[:]) // target protocol address
	return f
}

// RARP constants (RFC 903).
const (
	etherTypeRARP = 0x8035
	rarpOpRequest = 3 // "request reverse"
)

// RARPAnnounce returns a broadcast RARP request (RFC 903) from mac, asking
// for mac's own address: it needs no IP address, so a VMM that does not
// know the guest's can still make switches learn mac's new port when a
// backup goes live (QEMU announces migrated guests the same way). Hosts
// ignore it; no ARP cache changes.
func RARPAnnounce(mac [6]byte) []byte {
	f := make([]byte, minEtherFrame)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac[:])
	binary.BigEndian.PutUint16(f[12:], etherTypeRARP)
	a := f[14 : 14+arpLen]
	binary.BigEndian.PutUint16(a[0:], arpHTypeEther)
	binary.BigEndian.PutUint16(a[2:], arpPTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], rarpOpRequest)
	copy(a[8:14], mac[:])  // sender hardware address
	copy(a[18:24], mac[:]) // target hardware address: whose IP is asked
	return f
}
