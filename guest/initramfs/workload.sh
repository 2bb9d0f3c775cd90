# ftkvm example guest workload, sourced by /init (busybox ash).
#
# Deterministic and cheap: 10 steps of 10 rounds of shell arithmetic (a running
# checksum), no forks, no external commands, no time or randomness. Guest code
# is emulated at ~0.5-1 M instructions/s and one busybox ash arithmetic round
# costs ~11 k instructions, so the whole workload is ~1.6 M instructions
# (measured with valgrind --tool=lackey on the host: see guest/README.md).
# guest/build.sh runs this file on the host with the same busybox to produce
# expected-workload.txt. Output lines (tests grep them):
#   FTKVM-GUEST: step N/10 <checksum>     N = 1..10
#   FTKVM-GUEST: workload done <checksum>

ftkvm_workload() {
	sum=1
	for step in 1 2 3 4 5 6 7 8 9 10; do
		for i in 0 1 2 3 4 5 6 7 8 9; do
			sum=$(( (sum * 31 + i * step + 7) % 1000000007 ))
		done
		echo "FTKVM-GUEST: step $step/10 $sum"
	done
	echo "FTKVM-GUEST: workload done $sum"
}
