// Package hostnet changes this machine's network for tests and benchmarks
// that reach a guest through a tap: it needs root and /dev/net/tun.
package hostnet

import (
	"fmt"
	"os/exec"
	"strings"
)

// Tap creates the persistent tap name with this machine's address cidr on
// it, up (a leftover of that name is removed first), and returns the
// function that removes it. A guest's NIC attaches to it with ftvm's
// --net tap:NAME; a persistent tap outlives the process attached to it,
// as an FT pair's failover needs.
func Tap(name, cidr string) (remove func(), err error) {
	exec.Command("modprobe", "tun").Run() // built in, or already loaded: fine
	remove = func() { exec.Command("ip", "link", "del", name).Run() }
	remove()
	for _, args := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"addr", "add", cidr, "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			remove()
			return nil, fmt.Errorf("ip %s: %v: %s (needs root and /dev/net/tun)", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return remove, nil
}
