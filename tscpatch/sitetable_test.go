package tscpatch

import (
	"errors"
	"testing"
)

func TestSiteTable(t *testing.T) {
	image := assemble(t, synthetic, kernelLike)
	sites, err := Scan(image)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := NewSiteTable(sites, DefaultRDTSCPort, DefaultRDTSCPPort)
	if err != nil {
		t.Fatal(err)
	}
	port := func(k Kind) uint16 {
		if k == RDTSCP {
			return DefaultRDTSCPPort
		}
		return DefaultRDTSCPort
	}
	entries := 0
	for _, s := range sites {
		for _, pa := range append([]uint64{s.PAddr}, s.AltPAddrs...) {
			entries++
			got, err := tab.Check(port(s.Kind), true, 1, pa)
			if err != nil || got.VAddr != s.VAddr || got.Kind != s.Kind {
				t.Errorf("%v at %#x: got %v, %v", s, pa, got, err)
			}
			if _, ok := tab.Lookup(pa, port(s.Kind)); !ok {
				t.Errorf("%v: Lookup(%#x) missed", s, pa)
			}
		}
	}
	if tab.Len() != entries {
		t.Errorf("Len %d, want %d", tab.Len(), entries)
	}

	// f_alt's rdtsc and the rdtscp replacement the kernel may copy over it
	// share an address; the port tells which one executed.
	var orig, repl Site
	for _, s := range sites {
		if s.Symbol == "f_alt" && s.SymOffset == 0 {
			if s.Section == ".text" {
				orig = s
			} else {
				repl = s
			}
		}
	}
	if orig.Kind != RDTSC || repl.Kind != RDTSCP {
		t.Fatalf("f_alt sites: %v / %v", orig, repl)
	}
	if s, err := tab.Check(DefaultRDTSCPort, true, 1, orig.PAddr); err != nil || s.Kind != RDTSC {
		t.Errorf("rdtsc port at f_alt: %v, %v", s, err)
	}
	if s, err := tab.Check(DefaultRDTSCPPort, true, 1, orig.PAddr); err != nil || s.Kind != RDTSCP || s.VAddr != repl.VAddr {
		t.Errorf("rdtscp port at f_alt: %v, %v", s, err)
	}
	// ... which is why one port for both kinds is refused here.
	if _, err := NewSiteTable(sites, 0xE3, 0xE3); err == nil {
		t.Error("one port for both kinds accepted although an address holds both")
	}

	// A guest using the ports anywhere else is caught.
	first := sites[0]
	for name, c := range map[string]struct {
		port  uint16
		out   bool
		size  int
		paddr uint64
	}{
		"elsewhere":         {DefaultRDTSCPort, true, 1, first.PAddr + 1},
		"wrong port":        {port(first.Kind) ^ 0x07, true, 1, first.PAddr},
		"in":                {port(first.Kind), false, 1, first.PAddr},
		"word out":          {port(first.Kind), true, 2, first.PAddr},
		"other kind's port": {DefaultRDTSCPPort, true, 1, sites[0].PAddr},
	} {
		if _, err := tab.Check(c.port, c.out, c.size, c.paddr); err == nil {
			t.Errorf("%s: accepted", name)
		} else if c.port == DefaultRDTSCPort || c.port == DefaultRDTSCPPort {
			if !errors.Is(err, ErrUnknownSite) {
				t.Errorf("%s: err = %v, want ErrUnknownSite", name, err)
			}
		}
	}
	if !tab.Reserved(DefaultRDTSCPort) || !tab.Reserved(DefaultRDTSCPPort) || tab.Reserved(0x80) {
		t.Error("Reserved wrong")
	}
	if _, err := NewSiteTable([]Site{{PAddr: 1}}, 0xE3, 0xE4); err == nil {
		t.Error("site without kind accepted")
	}
}
