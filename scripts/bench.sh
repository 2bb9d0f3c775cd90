#!/usr/bin/env bash
# `make bench`: the benchmark programs, each printing its own table of
# figures measured side by side in one run. Those that need KVM run on this
# machine if it has /dev/kvm, else all together inside one software-emulated
# x86 host with a standard KVM (QEMU TCG + kvm_amd; see package testbed).
# Environment: GO (default go), FTKVM_GUEST_DIR (the Makefile sets it),
# FTKVM_BENCH_TIMEOUT (the emulated host's limit, default 60m),
# FTKVM_TESTBED_MEM (MB, default 4096), FTKVM_BENCH_TWOHOST_ARGS (flags of
# bench-twohost, e.g. -n 5); extra arguments go to bench-replay.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
ROOT=$PWD
export FTKVM_GUEST_DIR=${FTKVM_GUEST_DIR:-$ROOT/guest/out}
mkdir -p bin
"$GO" build -o bin/bench-replay ./cmd/bench-replay
"$GO" build -o bin/bench-ft ./cmd/bench-ft
"$GO" build -o bin/bench-devices ./cmd/bench-devices

# The KVM part, as one script (run here or in the emulated host).
kvm_part="set -e
echo '== ftvm record (a Linux log for bench-logchannel -log)'
bin/ftvm record -q -o bin/linux.log > /dev/null
echo '== bench-replay $*'
bin/bench-replay $*
echo '== bench-ft'
bin/bench-ft -ftvm bin/ftvm
echo '== bench-devices (virtio disk and network, FT against alone)'
bin/bench-devices -ftvm bin/ftvm -keep bin"

echo "== bench-logchannel"
"$GO" run ./cmd/bench-logchannel

# shellcheck source=kvm.sh
source scripts/kvm.sh
if kvm_usable; then
	bash -c "$kvm_part"
else
	echo "$(kvm_why): the KVM benchmarks run inside an emulated KVM host (QEMU TCG + kvm_amd)"
	"$GO" build -o bin/testbed ./cmd/testbed
	bin/testbed setup
	bin/testbed -mem "${FTKVM_TESTBED_MEM:-4096}" -timeout "${FTKVM_BENCH_TIMEOUT:-60m}" -dir "$ROOT" -e FTKVM_GUEST_DIR -c "$kvm_part"
fi

echo "== bench-logchannel -log bin/linux.log"
"$GO" run ./cmd/bench-logchannel -log bin/linux.log

# The FT pair across two emulated hosts (failover, output commit, slowdown).
echo "== bench-twohost"
"$GO" run ./cmd/bench-twohost -ftvm bin/ftvm -guest-dir "$FTKVM_GUEST_DIR" ${FTKVM_BENCH_TWOHOST_ARGS:-}
