#!/usr/bin/env bash
# `make demo`: bin/ftvm demo (an FT pair with a failover; see examples/ftvm)
# on this machine if it has /dev/kvm, else inside one software-emulated x86
# host with a standard KVM (QEMU TCG + kvm_amd; see package testbed).
# Arguments go to `ftvm demo`. Environment: GO (default go),
# FTKVM_GUEST_DIR (the Makefile sets it), FTKVM_DEMO_TIMEOUT (the emulated
# host's wall-clock limit, default 30m), FTKVM_TESTBED_MEM (MB, default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export FTKVM_GUEST_DIR=${FTKVM_GUEST_DIR:-$PWD/guest/out}

# -c first: <> would create a plain file where there is none.
if [[ -c /dev/kvm ]] && (: 3<>/dev/kvm) 2>/dev/null; then
	exec bin/ftvm demo "$@"
fi

echo "no /dev/kvm here: running the demo inside an emulated KVM host (QEMU TCG + kvm_amd)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftkvm-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$GO" build -o "$WORK/testbed" ./cmd/testbed
"$WORK/testbed" setup
"$WORK/testbed" -mem "${FTKVM_TESTBED_MEM:-4096}" -timeout "${FTKVM_DEMO_TIMEOUT:-30m}" -dir "$PWD" -e FTKVM_GUEST_DIR \
	-- bin/ftvm demo "$@"
