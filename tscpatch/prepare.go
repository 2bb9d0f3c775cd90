package tscpatch

import "fmt"

// Prepared is a guest image ready to load: its rdtsc and rdtscp sites
// patched with the default ports, and the table the VMM checks their exits
// against (nil when the image has no site).
type Prepared struct {
	Image []byte     // the patched copy (the input itself when nothing was patched)
	Sites []Site     // the sites found, in image order
	Table *SiteTable // for vmm.Config.TSCSites; nil without sites
}

// PrepareELF scans a vmlinux (Scan), patches its sites (Patch) and builds
// their SiteTable, all with DefaultRDTSCPort and DefaultRDTSCPPort.
func PrepareELF(vmlinux []byte) (Prepared, error) {
	sites, err := Scan(vmlinux)
	if err != nil {
		return Prepared{}, fmt.Errorf("finding rdtsc sites: %w", err)
	}
	return prepare(vmlinux, sites)
}

// PrepareFlat does what PrepareELF does for a flat image loaded at base
// (ScanFlat; a bare guest loads at vmm.BareLoadAddr).
func PrepareFlat(image []byte, base uint64) (Prepared, error) {
	sites, err := ScanFlat(image, base)
	if err != nil {
		return Prepared{}, fmt.Errorf("finding rdtsc sites: %w", err)
	}
	return prepare(image, sites)
}

func prepare(image []byte, sites []Site) (Prepared, error) {
	p := Prepared{Image: image, Sites: sites}
	if len(sites) == 0 {
		return p, nil
	}
	var err error
	if p.Image, err = Patch(image, sites, DefaultRDTSCPort, DefaultRDTSCPPort); err != nil {
		return Prepared{}, fmt.Errorf("patching rdtsc sites: %w", err)
	}
	if p.Table, err = NewSiteTable(sites, DefaultRDTSCPort, DefaultRDTSCPPort); err != nil {
		return Prepared{}, err
	}
	return p, nil
}
