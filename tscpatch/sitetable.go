package tscpatch

import (
	"errors"
	"fmt"
)

// SiteTable maps the guest physical address of each patched "out" (and its
// port) to its Site, so the VMM can tell an exit on a reserved port that comes
// from a patched site from a guest writing to the port anywhere else.
//
// A site in .altinstr_replacement is entered under each of its AltPAddrs as
// well as its PAddr: when the kernel applies the alternative at boot it
// copies the patched bytes there and the out executes at the copy. One
// address can therefore hold two sites, e.g. the rdtsc in .text that
// rdtsc_ordered() compiles to and the rdtscp replacement the kernel copies
// over it when the CPU has RDTSCP; the port tells them apart, which is why
// the two ports should differ.
type SiteTable struct {
	rdtscPort, rdtscpPort uint8
	sites                 map[siteKey]Site
}

type siteKey struct {
	paddr uint64
	port  uint8
}

// ErrUnknownSite: an exit on a reserved port did not come from a patched
// site of the matching kind. The guest wrote to the port on its own (a
// hostile or buggy guest) or the site table belongs to another image.
var ErrUnknownSite = errors.New("tscpatch: exit on a reserved port from no patched site")

// NewSiteTable indexes sites as patched by Patch with the same ports. It
// fails if one address would hold an rdtsc and an rdtscp site on the same
// port (possible only when the ports are equal), because such an exit could
// not be told apart.
func NewSiteTable(sites []Site, rdtscPort, rdtscpPort uint8) (*SiteTable, error) {
	t := &SiteTable{rdtscPort: rdtscPort, rdtscpPort: rdtscpPort, sites: make(map[siteKey]Site, len(sites))}
	for _, s := range sites {
		port, err := t.portFor(s.Kind)
		if err != nil {
			return nil, fmt.Errorf("tscpatch: site at %#x: %w", s.VAddr, err)
		}
		for _, pa := range append([]uint64{s.PAddr}, s.AltPAddrs...) {
			k := siteKey{pa, port}
			if old, dup := t.sites[k]; dup && old.Kind != s.Kind {
				return nil, fmt.Errorf("tscpatch: guest physical address %#x holds both %v and %v, which trap on the same port %#x: use distinct ports", pa, old, s, port)
			}
			if _, dup := t.sites[k]; !dup {
				t.sites[k] = s
			}
		}
	}
	return t, nil
}

func (t *SiteTable) portFor(k Kind) (uint8, error) {
	switch k {
	case RDTSC:
		return t.rdtscPort, nil
	case RDTSCP:
		return t.rdtscpPort, nil
	}
	return 0, fmt.Errorf("invalid kind %v", k)
}

// Lookup returns the site whose patched "out imm8, al" to port starts at
// guest physical address paddr. After the VMM completes the exit (the out has
// retired), that is the physical address of RIP-2: the out is always two
// bytes.
func (t *SiteTable) Lookup(paddr uint64, port uint16) (Site, bool) {
	if port > 0xff {
		return Site{}, false
	}
	s, ok := t.sites[siteKey{paddr, uint8(port)}]
	return s, ok
}

// Len returns the number of (address, port) entries: sites plus the
// addresses alternatives copy them to.
func (t *SiteTable) Len() int { return len(t.sites) }

// Reserved reports whether port is one of the table's trapping ports.
func (t *SiteTable) Reserved(port uint16) bool {
	return port == uint16(t.rdtscPort) || port == uint16(t.rdtscpPort)
}

// Check validates a KVM_EXIT_IO on a reserved port: isOut is its direction,
// size its access size, outPAddr the guest physical address where the
// instruction that caused it starts. A patched site produces a one-byte out;
// the returned Site's Kind says what to emulate. Anything else is an error
// wrapping ErrUnknownSite.
func (t *SiteTable) Check(port uint16, isOut bool, size int, outPAddr uint64) (Site, error) {
	if !t.Reserved(port) {
		return Site{}, fmt.Errorf("tscpatch: port %#x is not a reserved port", port)
	}
	if !isOut || size != 1 {
		dir := "in"
		if isOut {
			dir = "out"
		}
		return Site{}, fmt.Errorf("%w: %d-byte %s on port %#x at %#x", ErrUnknownSite, size, dir, port, outPAddr)
	}
	s, ok := t.Lookup(outPAddr, port)
	if !ok {
		return Site{}, fmt.Errorf("%w: out to port %#x at %#x", ErrUnknownSite, port, outPAddr)
	}
	return s, nil
}
