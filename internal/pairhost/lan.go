package pairhost

import (
	"fmt"
	"os/exec"
	"strings"
)

// LANTap is the tap inside each host that the guest's NIC attaches to
// (ftvm --net tap:LANTap); it is bridged with the host's LAN NIC.
const LANTap = "ftkvm0"

// LAN is a network on this machine that the pair's guest joins: a bridge
// with an address of this machine, and one tap per emulated host, which
// QEMU gives the host as a second NIC. Inside, each host bridges that NIC
// with LANTap, so the guest's frames reach this machine from whichever
// host runs it, and a client here can hold a TCP connection to the guest
// through a failover (the new primary announces the guest's MAC, and the
// bridges learn its new port). It changes this machine's network (needs
// root and /dev/net/tun); Close undoes it.
type LAN struct {
	Bridge string    // e.g. ftkvmbr0
	Taps   [2]string // the primary's host's, the backup's host's
	CIDR   string    // this machine's address on it, e.g. 10.0.2.1/24
}

// NewLAN creates the bridge (with cidr, this machine's address) and the
// two taps, all up. A leftover of an earlier run is removed first.
func NewLAN(prefix, cidr string) (*LAN, error) {
	l := &LAN{Bridge: prefix + "br0", Taps: [2]string{prefix + "p0", prefix + "b0"}, CIDR: cidr}
	l.Close()
	steps := [][]string{
		{"link", "add", l.Bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", cidr, "dev", l.Bridge},
		{"link", "set", l.Bridge, "up"},
	}
	for _, t := range l.Taps {
		steps = append(steps,
			[]string{"tuntap", "add", "dev", t, "mode", "tap"},
			[]string{"link", "set", t, "master", l.Bridge},
			[]string{"link", "set", t, "up"})
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			l.Close()
			return nil, fmt.Errorf("pairhost: making the LAN: ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return l, nil
}

// Close removes the bridge and the taps.
func (l *LAN) Close() {
	for _, t := range l.Taps {
		exec.Command("ip", "link", "del", t).Run()
	}
	exec.Command("ip", "link", "del", l.Bridge).Run()
}

// lanMAC is host i's LAN NIC address.
func lanMAC(i int) string { return fmt.Sprintf("52:54:00:f7:4c:%02x", i+1) }

// qemuArgs give host i its LAN NIC on its tap.
func (l *LAN) qemuArgs(i int) []string {
	return []string{
		"-netdev", fmt.Sprintf("tap,id=lan0,ifname=%s,script=no,downscript=no", l.Taps[i]),
		"-device", "virtio-net-pci,netdev=lan0,mac=" + lanMAC(i),
	}
}

// lanScript, run in a host before ftvm, bridges the NIC with address mac
// and a persistent LANTap (which outlives ftvm, so the tap is there for
// a backup that goes live).
func lanScript(mac string) string {
	return fmt.Sprintf(`set -e
modprobe tun
modprobe bridge
nic=$(ip -o link | awk -v m=%s '$0 ~ m { sub(":", "", $2); print $2 }')
[ -n "$nic" ] || { echo "no NIC with MAC %s"; ip -o link; exit 1; }
ip link add br0 type bridge stp_state 0 forward_delay 0
ip link set "$nic" master br0
ip tuntap add dev %s mode tap
ip link set %s master br0
ip link set "$nic" up
ip link set %s up
ip link set br0 up
set +e`, mac, mac, LANTap, LANTap, LANTap)
}
