#!/usr/bin/env bash
# Run the example Linux guest N times (default 15) as an FT pair on this
# host's loopback (mutual TLS, --window-entries 1500, as the e2e tests do)
# and report, per run, whether the primary finished within 100 s and its
# last two lines: the commit delay split and where its vCPU time went. A run
# that does not finish is stopped with SIGINT (its exit trace is kept, in
# $FTKVM_PAIR_LOOP_KEEP or a temporary directory) — the loop that found the
# interrupt lost at a faulting wrmsr and the timer livelock. Needs
# /dev/kvm; without it, in an emulated KVM host:
#   go run ./cmd/testbed -timeout 60m -- scripts/pair-loop.sh 15
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-15}
g=${FTKVM_GUEST_DIR:-$PWD/guest/out}
work=${FTKVM_PAIR_LOOP_KEEP:-$(mktemp -d)}
mkdir -p "$work"
bin/ftvm certs "$work/certs" >/dev/null
ok=0
for ((i = 1; i <= n; i++)); do
	split=$work/split$i
	mkdir -p "$split"
	bin/ftvm primary --guest-dir "$g" --window-entries 1500 --listen 127.0.0.1:7700 --split-dir "$split" \
		--tls-dir "$work/certs" --trace "$work/p$i.trace" >"$work/p$i.out" 2>"$work/p$i.err" &
	p=$!
	sleep 0.5
	bin/ftvm backup --guest-dir "$g" --connect 127.0.0.1:7700 --split-dir "$split" \
		--tls-dir "$work/certs" >"$work/b$i.out" 2>"$work/b$i.err" &
	b=$!
	t0=$SECONDS
	while kill -0 $p 2>/dev/null && ((SECONDS - t0 < 100)); do sleep 1; done
	if kill -0 $p 2>/dev/null; then
		kill -INT $p
		sleep 8
		kill -9 $p $b 2>/dev/null
		wait
		echo "run $i: STALLED (not finished after 100 s): $(grep -c 'PROTECTED: exit' "$work/p$i.err") status lines, last: $(grep 'PROTECTED: exit' "$work/p$i.err" | tail -1); trace $work/p$i.trace"
		continue
	fi
	wait
	ok=$((ok + 1))
	echo "run $i: finished in $((SECONDS - t0)) s"
	grep -E 'finished protected|where the vCPU' "$work/p$i.err" | sed 's/^/    /'
	rm -f "$work/p$i.trace"
done
echo "pair-loop: $ok of $n runs finished; logs in $work"
