#!/usr/bin/env bash
# `make test`: go vet, then every test on this machine, then — where this
# machine has no /dev/kvm — the tests of the KVM packages again, inside one
# software-emulated x86 host with a standard KVM (QEMU TCG + kvm_amd; see
# package testbed). On the machine itself those tests skip because
# FTKVM_KVM_ELSEWHERE=1 (internal/kvmtest); in the emulated host they run.
# Where /dev/kvm exists, the native pass runs everything and that is all.
#
# Environment: GO (default go), FTKVM_GUEST_DIR (the Makefile sets it),
# CI (passed into the emulated host), FTKVM_TEST_TIMEOUT (native go test
# -timeout, default 40m), FTKVM_KVM_PKG_TIMEOUT (each KVM package in the
# emulated host, default 40m), FTKVM_KVM_STAGE_TIMEOUT (the emulated host as
# a whole, boot included, default 75m: CI allows 90 for everything), FTKVM_TESTBED_MEM (MB, default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."

# The packages with tests that need /dev/kvm, in the order they run in the
# emulated host. The one list: add a package here when its tests call
# kvmtest.Require.
KVM_PKGS=(./vmm ./replay/suite ./ft ./e2e)

GO=${GO:-go}
ROOT=$PWD
MODULE=$("$GO" list -m)
export FTKVM_GUEST_DIR=${FTKVM_GUEST_DIR:-$ROOT/guest/out}
NATIVE_TIMEOUT=${FTKVM_TEST_TIMEOUT:-40m}
PKG_TIMEOUT=${FTKVM_KVM_PKG_TIMEOUT:-40m}
STAGE_TIMEOUT=${FTKVM_KVM_STAGE_TIMEOUT:-75m}

# Opening it read-write is what the tests need, not its mere presence (-c
# first: <> would create a plain file where there is none).
kvm_here() { [[ -c /dev/kvm ]] && (: 3<>/dev/kvm) 2>/dev/null; }

if kvm_here; then
	echo "make test: /dev/kvm is here: every test runs on this machine"
	elsewhere=()
else
	echo "make test: no /dev/kvm here: all tests run on this machine, then the KVM packages (${KVM_PKGS[*]#./}) again in one emulated KVM host (QEMU TCG + kvm_amd)"
	elsewhere=(FTKVM_KVM_ELSEWHERE=1)
fi

echo "== go vet ./..."
"$GO" vet ./...

status=0
echo "== go test ./... (this machine)"
env "${elsewhere[@]}" FTKVM_REQUIRE_GUEST=1 "$GO" test -count=1 -timeout "$NATIVE_TIMEOUT" ./... || status=1

if kvm_here; then
	exit $status
fi

echo "== KVM stage: building the test binaries of ${KVM_PKGS[*]#./}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftkvm-kvm-tests.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$GO" build -o "$WORK/testbed" ./cmd/testbed
"$WORK/testbed" -v setup

# The script run inside: each package's binary in its own directory (test
# binaries expect cwd = package dir), a go test-style line per package.
{
	cat <<'EOF'
#!/bin/bash
set -u
failed=0
summary=
run_pkg() { # import path, package dir, test binary
	local t0=${EPOCHREALTIME/./} rc=0 us line
	echo "=== package $1"
	(cd "$2" && "$3" -test.count=1 -test.v -test.timeout="$PKG_TIMEOUT") || rc=$?
	us=$((${EPOCHREALTIME/./} - t0))
	if ((rc == 0)); then
		line=$(printf 'ok  \t%s\t%d.%03ds' "$1" $((us / 1000000)) $((us % 1000000 / 1000)))
	else
		line=$(printf 'FAIL\t%s\t%d.%03ds' "$1" $((us / 1000000)) $((us % 1000000 / 1000)))
		failed=1
	fi
	echo "$line"
	summary+="$line"$'\n'
}
echo "kernel $(uname -r), $(nproc) vCPU, $(ls -l /dev/kvm)"
EOF
	for p in "${KVM_PKGS[@]}"; do
		name=${p#./}
		bin="$WORK/${name//\//_}.test"
		"$GO" test -c -o "$bin" "$p"
		[[ -x $bin ]] || { echo "make test: $p has no tests" >&2; exit 1; }
		printf 'run_pkg %q %q %q\n' "$MODULE/$name" "$ROOT/$name" "$bin"
	done
	cat <<'EOF'
echo "== KVM stage summary (emulated host)"
printf '%s' "$summary"
exit $failed
EOF
} >"$WORK/inside.sh"

# Inside: the module cache and build cache of this machine (read through the
# overlay; new cache entries land in the host's tmpfs), no network.
envs=(
	-e FTKVM_REQUIRE_GUEST=1 -e FTKVM_GUEST_DIR -e PKG_TIMEOUT="$PKG_TIMEOUT"
	-e FTKVM_FTVM="$ROOT/bin/ftvm"
	-e GOCACHE="$("$GO" env GOCACHE)" -e GOMODCACHE="$("$GO" env GOMODCACHE)"
	-e GOPROXY=off -e GOTOOLCHAIN=local -e GOFLAGS=-buildvcs=false
)
[[ -z ${CI+x} ]] || envs+=(-e CI)

echo "== KVM stage: one emulated host runs ${KVM_PKGS[*]#./} (timeout $STAGE_TIMEOUT)"
rc=0
"$WORK/testbed" -v -mem "${FTKVM_TESTBED_MEM:-4096}" -timeout "$STAGE_TIMEOUT" -dir "$WORK" "${envs[@]}" \
	-- bash "$WORK/inside.sh" || rc=$?
if ((rc != 0)); then
	echo "make test: KVM stage failed (status $rc)"
	status=1
fi
if ((status != 0)); then
	echo "make test: FAIL"
else
	echo "make test: ok"
fi
exit $status
