package hostnet

import (
	"net"
	"os"
	"testing"
)

// TestTap makes a tap with an address, up, and removes it.
func TestTap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const name = "ftkvmhn0"
	remove, err := Tap(name, "10.0.77.1/24")
	if err != nil {
		t.Fatal(err)
	}
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		remove()
		t.Fatalf("the tap is not there: %v", err)
	}
	addrs, _ := ifc.Addrs()
	found := false
	for _, a := range addrs {
		found = found || a.String() == "10.0.77.1/24"
	}
	if !found || ifc.Flags&net.FlagUp == 0 {
		t.Errorf("tap %s: addresses %v, flags %v; want 10.0.77.1/24, up", name, addrs, ifc.Flags)
	}
	remove()
	if _, err := net.InterfaceByName(name); err == nil {
		t.Errorf("tap %s still there after remove", name)
	}
	if _, err := Tap("this-name-is-far-too-long-for-an-interface", "10.0.77.1/24"); err == nil {
		t.Error("an invalid interface name was accepted")
	}
}
