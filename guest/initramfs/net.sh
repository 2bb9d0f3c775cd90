# ftkvm example guest: the network workload (ftkvm.work=net), sourced by /init
# (busybox ash).
#
# ftkvm_net_run configures lo and eth0 (address from ftkvm.ip=, default
# 10.0.2.15/24), starts a TCP echo server on the port from ftkvm.port= (default
# 7) that serves ONE connection, and waits for that connection to end. The
# server is `nc -l -p PORT -e cat`: nc accepts, puts the socket on cat's stdin
# and stdout and execs cat, which copies 64 KiB reads back unchanged until the
# client closes its side (EOF), then exits 0. No shell runs per line or byte.
# Output lines (tests grep them):
#   FTKVM-GUEST: net up <A.B.C.D/NN> port <PORT>   the server is listening
#   FTKVM-GUEST: echo done                         the connection ended, cat exited 0
#   FTKVM-GUEST: echo failed exit <N>              ... with status N (e.g. a reset)
#   FTKVM-GUEST: net failed <what>                 bad parameter, ip, nc did not listen

# ftkvm_net_listening PORT: whether a TCP socket listens on PORT, from
# /proc/net/tcp (and tcp6, for runs on a host); builtins only, no fork.
ftkvm_net_listening() {
	local f sl addr rem st rest
	for f in /proc/net/tcp /proc/net/tcp6; do
		[ -r $f ] || continue
		while read -r sl addr rem st rest; do
			[ "$st" = 0A ] && [ $((0x${addr##*:})) = "$1" ] && return 0
		done <$f
	done
	return 1
}

# ftkvm_net_run [ADDR/NN [PORT [IFACE]]]
ftkvm_net_run() {
	local addr=${1:-10.0.2.15/24} port=${2:-7} dev=${3:-eth0} pid n=0 rc
	case $port in
	'' | *[!0-9]*)
		echo "FTKVM-GUEST: net failed bad port '$port'"
		return 1
		;;
	esac
	if ! ip link set lo up || ! ip addr add "$addr" dev "$dev" || ! ip link set "$dev" up; then
		echo "FTKVM-GUEST: net failed configuring $dev with $addr"
		return 1
	fi
	nc -l -p "$port" -e cat &
	pid=$!
	# Announce only once the port listens, so a client may connect at once.
	until ftkvm_net_listening "$port"; do
		n=$((n + 1))
		if [ $n -gt 300 ] || ! kill -0 $pid 2>/dev/null; then
			kill $pid 2>/dev/null
			wait $pid
			echo "FTKVM-GUEST: net failed echo server not listening on port $port"
			return 1
		fi
		usleep 10000
	done
	echo "FTKVM-GUEST: net up $addr port $port"
	wait $pid
	rc=$?
	if [ $rc = 0 ]; then
		echo "FTKVM-GUEST: echo done"
	else
		echo "FTKVM-GUEST: echo failed exit $rc"
	fi
	return $rc
}
