#!/usr/bin/env bash
# `make test`: go vet, then every test on this machine, then — where this
# machine has no /dev/kvm — the tests of the KVM packages again, inside one
# software-emulated x86 host with a standard KVM (QEMU TCG + kvm_amd; see
# package testbed). On the machine itself those tests skip because
# FTKVM_KVM_ELSEWHERE=1 (internal/kvmtest); in the emulated host they run.
# Where /dev/kvm exists, the native pass runs everything else. Last, in
# both cases, the two-host stage: the FT pair across two emulated hosts
# (package e2e/twohost), whose test binary runs here and starts the hosts.
#
# Environment: GO (default go), FTKVM_GUEST_DIR (the Makefile sets it),
# CI (passed into the emulated host), FTKVM_TEST_TIMEOUT (native go test
# -timeout, default 40m), FTKVM_KVM_PKG_TIMEOUT (each KVM package in the
# emulated host, default 40m), FTKVM_KVM_STAGE_TIMEOUT (the emulated host as
# a whole, boot included, default 35m; the two-host stage has FTKVM_TWOHOST_TIMEOUT, default 30m: make test takes about 21 minutes, CI allows 90, and a hang must fail readably before that; make soak raises both), FTKVM_TESTBED_MEM (MB, default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."

# The packages with tests that need /dev/kvm, in the order they run in the
# emulated host. The one list: add a package here when its tests call
# kvmtest.Require, or Examples with Output that boot guests
# (kvmtest.RunExamples).
KVM_PKGS=(./vmm ./replay/suite ./ft ./e2e ./replay)
# KVM_RUN narrows a package's run in the emulated host to the tests that
# need KVM (-test.run), where the rest already ran on this machine.
declare -A KVM_RUN=([./replay]='^Example')
# The package that starts emulated hosts itself (two per test).
TWOHOST_PKG=./e2e/twohost

GO=${GO:-go}
ROOT=$PWD

# Everything below is also kept in a file, for the digest of failures
# printed last (a CI log shows its end).
LOG=$(mktemp "${TMPDIR:-/tmp}/ftkvm-make-test.XXXXXX.log")
exec > >(tee "$LOG") 2>&1
TEE_PID=$!
# At the end, let tee write out the last lines before the script exits.
finish() {
	[[ -n ${WORK:-} ]] && rm -rf "$WORK"
	exec >&- 2>&-
	wait "$TEE_PID" 2>/dev/null
	rm -f "$LOG"
}
trap finish EXIT

# failure_digest prints, for each failed test, the last lines it logged
# (go test -v prints a test's log lines after its "=== RUN" or "=== CONT"
# line and its verdict at the end of its parent, so they are far apart).
failure_digest() {
	awk '
		/^=== (RUN|CONT|PAUSE|NAME) / { cur = $3; next }
		/^ *--- FAIL: / { f = $3; if (!(f in seen)) { seen[f] = 1; order[++n] = f } ; next }
		/^ *--- (PASS|SKIP): / { next }
		{ if (cur != "") { c = ++cnt[cur]; lines[cur, c] = $0 } }
		END {
			for (i = 1; i <= n; i++) {
				f = order[i]; c = cnt[f]
				if (c == 0) continue
				print "--- failed: " f " (its last lines)"
				for (j = (c > 40 ? c - 39 : 1); j <= c; j++) print lines[f, j]
			}
		}' "$LOG" | head -n 400
}
MODULE=$("$GO" list -m)
export FTKVM_GUEST_DIR=${FTKVM_GUEST_DIR:-$ROOT/guest/out}
NATIVE_TIMEOUT=${FTKVM_TEST_TIMEOUT:-40m}
PKG_TIMEOUT=${FTKVM_KVM_PKG_TIMEOUT:-40m}
STAGE_TIMEOUT=${FTKVM_KVM_STAGE_TIMEOUT:-35m}

# Opening it read-write is what the tests need, not its mere presence (-c
# first: <> would create a plain file where there is none).
# dur_seconds 75m -> 4500 (s, m or h suffix).
dur_seconds() {
	local d=$1
	case $d in
	*h) echo $((${d%h} * 3600)) ;;
	*m) echo $((${d%m} * 60)) ;;
	*s) echo "${d%s}" ;;
	*) echo "$d" ;;
	esac
}

# shellcheck source=kvm.sh
source scripts/kvm.sh
kvm_here() { kvm_usable; }

if kvm_here; then
	echo "make test: /dev/kvm is here: every test runs on this machine"
	elsewhere=()
else
	echo "make test: $(kvm_why): all tests run on this machine, then the KVM packages (${KVM_PKGS[*]#./}) again, each in an emulated KVM host (QEMU TCG + kvm_amd)"
	elsewhere=(FTKVM_KVM_ELSEWHERE=1)
fi

echo "== go vet ./..."
"$GO" vet ./...

status=0
echo "== go test ./... (this machine)"
env "${elsewhere[@]}" FTKVM_TWOHOST=0 FTKVM_REQUIRE_GUEST=1 "$GO" test -count=1 -timeout "$NATIVE_TIMEOUT" ./... || status=1

summary=
# twohost_stage runs the two-host FT tests here: each test boots its own
# pair of emulated hosts (testbed), so the stage needs them set up.
twohost_stage() {
	local t0=$SECONDS rc=0 ftvm=()
	echo "== two-host stage: the FT pair across two emulated hosts ($TWOHOST_PKG)"
	"$GO" run ./cmd/testbed -v setup
	[[ -x $ROOT/bin/ftvm ]] && ftvm=(FTKVM_FTVM="$ROOT/bin/ftvm")
	env "${ftvm[@]}" FTKVM_TWOHOST=1 "$GO" test -count=1 -v -timeout "${FTKVM_TWOHOST_TIMEOUT:-30m}" "$TWOHOST_PKG" || rc=$?
	if ((rc == 0)); then
		summary+="ok  	$MODULE/${TWOHOST_PKG#./}	$((SECONDS - t0)).000s (two hosts)"$'\n'
	else
		summary+="FAIL	$MODULE/${TWOHOST_PKG#./}	$((SECONDS - t0)).000s (two hosts)"$'\n'
		status=1
	fi
}

if kvm_here; then
	twohost_stage
	printf '%s' "$summary"
	((status == 0)) || { echo "== failures"; failure_digest; }
	exit $status
fi

echo "== KVM stage: building the test binaries of ${KVM_PKGS[*]#./}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftkvm-kvm-tests.XXXXXX") # removed by finish
"$GO" build -o "$WORK/testbed" ./cmd/testbed
"$WORK/testbed" -v setup

# One emulated host per package (a boot costs about 5 s): the script run
# inside runs the package's test binary in its directory (test binaries
# expect cwd = package dir) and prints a go test-style line.
for p in "${KVM_PKGS[@]}"; do
	name=${p#./}
	bin="$WORK/${name//\//_}.test"
	"$GO" test -c -o "$bin" "$p"
	[[ -x $bin ]] || { echo "make test: $p has no tests" >&2; exit 1; }
	{
		echo '#!/bin/bash'
		echo 'set -u'
		echo 'echo "kernel $(uname -r), $(nproc) vCPU, $(ls -l /dev/kvm)"'
		printf 'pkg=%q dir=%q bin=%q run=%q\n' "$MODULE/$name" "$ROOT/$name" "$bin" "${KVM_RUN[$p]:-}"
		cat <<'INSIDE'
t0=${EPOCHREALTIME/./}
rc=0
echo "=== package $pkg"
(cd "$dir" && "$bin" -test.count=1 -test.v -test.timeout="$PKG_TIMEOUT" ${run:+-test.run="$run"}) || rc=$?
us=$((${EPOCHREALTIME/./} - t0))
if ((rc == 0)); then
	printf 'ok  \t%s\t%d.%03ds\n' "$pkg" $((us / 1000000)) $((us % 1000000 / 1000))
else
	printf 'FAIL\t%s\t%d.%03ds\n' "$pkg" $((us / 1000000)) $((us % 1000000 / 1000))
fi
exit $rc
INSIDE
	} >"$WORK/${name//\//_}.sh"
done

# Inside: the module cache and build cache of this machine (read through the
# overlay; new cache entries land in the host's tmpfs), no network.
envs=(
	-e FTKVM_REQUIRE_GUEST=1 -e FTKVM_GUEST_DIR -e PKG_TIMEOUT="$PKG_TIMEOUT"
	-e FTKVM_FTVM="$ROOT/bin/ftvm"
	-e GOCACHE="$("$GO" env GOCACHE)" -e GOMODCACHE="$("$GO" env GOMODCACHE)"
	-e GOPROXY=off -e GOTOOLCHAIN=local -e GOFLAGS=-buildvcs=false
)
[[ -z ${CI+x} ]] || envs+=(-e CI)
# make soak (FTKVM_SOAK=1) and the per-sweep point counts reach the tests
# inside too.
for v in $(compgen -e | grep -E '^FTKVM_(SOAK|.*_POINTS)$' || true); do envs+=(-e "$v"); done

echo "== KVM stage: ${KVM_PKGS[*]#./}, each in an emulated host (stage limit $STAGE_TIMEOUT)"
stage_end=$((SECONDS + $(dur_seconds "$STAGE_TIMEOUT")))
for p in "${KVM_PKGS[@]}"; do
	name=${p#./}
	t0=$SECONDS
	for try in 1 2; do
		left=$((stage_end - SECONDS))
		if ((left <= 60)); then
			echo "make test: the KVM stage's $STAGE_TIMEOUT are used up before $name"
			rc=124
			break
		fi
		rc=0
		"$WORK/testbed" -v -mem "${FTKVM_TESTBED_MEM:-4096}" -timeout "${left}s" -dir "$WORK" "${envs[@]}" \
			-- bash "$WORK/${name//\//_}.sh" || rc=$?
		# 125: the emulated host itself failed (froze, crashed), not a
		# test. QEMU's TCG has frozen a host now and then (its vCPU
		# halted in the host kernel, never woken); one retry in a new
		# host, said out loud.
		if ((rc == 125 && try == 1)); then
			echo "make test: the emulated host failed while running $name (not a test result): running $name again in a new host"
			continue
		fi
		break
	done
	if ((rc == 0)); then
		summary+="ok  	$MODULE/$name	$((SECONDS - t0)).000s"$'\n'
	else
		summary+="FAIL	$MODULE/$name	$((SECONDS - t0)).000s"$'\n'
		status=1
	fi
done
twohost_stage
echo "== KVM stage summary (emulated hosts)"
printf '%s' "$summary"
if ((status != 0)); then
	echo "== failures"
	failure_digest
	echo "make test: FAIL"
else
	echo "make test: ok"
fi
exit $status
