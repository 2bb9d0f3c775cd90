#!/bin/busybox sh
# /init of the emulated host (package testbed). It runs as PID 1 from the
# initramfs that testbed builds: busybox, the kernel modules listed in
# /modules/order and this file. Its console is ttyS0, which QEMU connects to
# the testbed's pipe; the Go side reads the markers below from it:
#
#   FTKVM-TESTBED-ERROR <message>     the host could not be set up (before START)
#   FTKVM-TESTBED-START               the script starts: what follows is its output
#   FTKVM-TESTBED-EXIT <nonce> <rc>   the script ended with status rc
#
# The nonce comes from /ctl/config, so a script that prints a line like the
# last one cannot fake its own exit status.

/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "FTKVM-TESTBED-ERROR $*"
	dmesg | tail -n 15 | sed 's/^/FTKVM-TESTBED-ERROR   dmesg: /'
	poweroff -f
	sleep 5
	exit 1
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

# Load order comes from modprobe --show-depends at build time.
for m in $(cat /modules/order); do
	insmod "/modules/$m" && continue
	case $m in
	kvm*) fail "no /dev/kvm inside the emulated host: insmod $m failed (does the emulated CPU offer SVM? -cpu EPYC,+svm,+npt)" ;;
	*) fail "insmod $m failed" ;;
	esac
done

# The reason this host exists: a standard KVM. Refuse to run the script
# without it rather than let every KVM test skip or fail obscurely.
[ -c /dev/kvm ] || fail "no /dev/kvm inside the emulated host: kvm_amd did not bind (does QEMU offer svm? -cpu EPYC,+svm,+npt)"

# Per-run control files (config, run.sh, the script; status written back).
mkdir -p /ctl /host /rw /new
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ctl /ctl || fail "mounting the control share failed"
. /ctl/config

# This machine's files: the whole / read-only over 9p, writes land in a
# tmpfs overlay, so the script sees the same Go, gcc and build outputs as
# outside without copying anything and cannot harm them.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host /host || fail "mounting this machine's / over 9p failed"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /new || fail "overlay mount failed"

mount -t proc proc /new/proc || fail "no /proc in the chroot"
mount -t sysfs sys /new/sys
mount -t devtmpfs dev /new/dev
mkdir -p /new/dev/pts /new/dev/shm
mount -t devpts devpts /new/dev/pts
mount -t tmpfs -o mode=1777 shm /new/dev/shm

# The shared directory, read-write at the same absolute path as outside.
# No cache: both sides may write while the script runs.
if [ -n "$TESTBED_DIR" ]; then
	mkdir -p "/new$TESTBED_DIR"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 dir "/new$TESTBED_DIR" ||
		fail "mounting the shared directory $TESTBED_DIR failed"
fi
mkdir -p /new/run/ftkvm-testbed
mount -o bind /ctl /new/run/ftkvm-testbed

# Without lo up, loopback tests fail with "network is unreachable".
ip link set lo up
hostname "${TESTBED_HOSTNAME:-ftkvm-testbed}"

# The private link to another emulated host: link-local IPv6 only, never
# routed, so test traffic stays on this machine. DAD off: the address must
# be usable at once, and busybox ip has no nodad.
if [ -n "$TESTBED_LINK_ADDR" ]; then
	[ -d /sys/class/net/eth0 ] || fail "Link set but no eth0 inside (virtio-net missing?)"
	echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
	ip link set eth0 up || fail "ip link set eth0 up failed"
	ip -6 addr add "$TESTBED_LINK_ADDR/64" dev eth0 || fail "adding $TESTBED_LINK_ADDR to eth0 failed"
fi

# The heartbeat: the testbed declares the host frozen when this file stops
# changing (a vCPU halted for good stops every timer inside, too).
(while :; do date +%s >/ctl/heartbeat; sleep 5; done) </dev/null >/dev/null 2>&1 &

# Raw output: no \n -> \r\n on the console, so the script's bytes arrive as written.
stty -F /dev/console -opost 2>/dev/null

echo "FTKVM-TESTBED-START"
chroot /new /usr/bin/env -i /bin/bash /run/ftkvm-testbed/run.sh </dev/null
rc=$?
echo "$rc" > /ctl/status
echo "FTKVM-TESTBED-EXIT $TESTBED_NONCE $rc"
sync
poweroff -f
sleep 5
