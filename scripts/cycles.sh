#!/usr/bin/env bash
# Record and replay the example Linux guest N times (default 10), in verify
# mode with fingerprints every 2,000 events, and count the replays that
# reach the recorded final fingerprint. Needs /dev/kvm; without it, run it
# in an emulated KVM host:
#   go run ./cmd/testbed -timeout 60m -- scripts/cycles.sh 10
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
export FTKVM_GUEST_DIR=${FTKVM_GUEST_DIR:-$PWD/guest/out}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ok=0
for ((i = 1; i <= n; i++)); do
	t0=$SECONDS
	timeout 600 bin/ftvm record -q --verify --fingerprint-every 2000 -o "$work/c.log" >"$work/rec" 2>&1
	r1=$?
	t1=$SECONDS
	timeout 600 bin/ftvm replay -q "$work/c.log" >"$work/rep" 2>&1
	r2=$?
	t2=$SECONDS
	f1=$(grep '^fingerprint' "$work/rec")
	f2=$(grep '^fingerprint' "$work/rep")
	same=no
	if [[ $r1 == 0 && $r2 == 0 && -n $f1 && $f1 == "$f2" ]]; then
		same=yes
		ok=$((ok + 1))
	fi
	echo "cycle $i: record exit $r1 in $((t1 - t0)) s, replay exit $r2 in $((t2 - t1)) s, $(stat -c %s "$work/c.log") log bytes, same fingerprint: $same"
	[[ $same == yes ]] || { tail -3 "$work/rec"; tail -3 "$work/rep"; }
done
echo "$ok of $n replays reached the recorded fingerprint"
((ok == n))
