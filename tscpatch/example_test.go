package tscpatch_test

import (
	"fmt"

	"github.com/ftkvm/ftkvm/tscpatch"
)

// A bare guest that reads the TSC twice, patched and checked the way the VMM
// handles the resulting exits.
func Example() {
	const base = 0x100000
	guest := []byte{
		0x0f, 0x31, // rdtsc
		0x89, 0xc3, // mov %eax, %ebx
		0x0f, 0x01, 0xf9, // rdtscp
		0xf4, // hlt
	}
	sites, err := tscpatch.ScanFlat(guest, base)
	if err != nil {
		panic(err)
	}
	patched, err := tscpatch.Patch(guest, sites, tscpatch.DefaultRDTSCPort, tscpatch.DefaultRDTSCPPort)
	if err != nil {
		panic(err)
	}
	table, err := tscpatch.NewSiteTable(sites, tscpatch.DefaultRDTSCPort, tscpatch.DefaultRDTSCPPort)
	if err != nil {
		panic(err)
	}
	fmt.Printf("% x\n", patched)

	// The guest's rdtscp site exits on port 0xe4; after completing the exit,
	// RIP-2 is base+4.
	site, err := table.Check(tscpatch.DefaultRDTSCPPort, true, 1, base+4)
	fmt.Println(site.Kind, err)
	// The same port written from anywhere else is not a TSC read.
	_, err = table.Check(tscpatch.DefaultRDTSCPPort, true, 1, base+2)
	fmt.Println(err)
	// Output:
	// e6 e3 89 c3 e6 e4 90 f4
	// rdtscp <nil>
	// tscpatch: exit on a reserved port from no patched site: out to port 0xe4 at 0x100002
}
