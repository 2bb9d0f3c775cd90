#!/usr/bin/env bash
# `make demo`: an FT pair with a failover. With /dev/kvm here, bin/ftvm
# demo (both sides on this machine, see examples/ftvm); without, the pair
# across two software-emulated x86 hosts with a standard KVM (QEMU TCG +
# kvm_amd; cmd/twohost-demo), whose primary host is killed partway.
# Arguments go to the demo. Environment: GO (default go), FTKVM_GUEST_DIR
# (the Makefile sets it), FTKVM_DEMO_TIMEOUT (default 30m).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export FTKVM_GUEST_DIR=${FTKVM_GUEST_DIR:-$PWD/guest/out}

# shellcheck source=kvm.sh
source scripts/kvm.sh
if kvm_usable; then
	exec bin/ftvm demo "$@"
fi

echo "$(kvm_why): the demo runs the pair across two emulated KVM hosts (QEMU TCG + kvm_amd), one per side"
exec "$GO" run ./cmd/twohost-demo -ftvm bin/ftvm -guest-dir "$FTKVM_GUEST_DIR" -timeout "${FTKVM_DEMO_TIMEOUT:-30m}" "$@"
