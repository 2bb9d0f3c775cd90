#!/usr/bin/env bash
# Build the ftkvm example guest: a tiny Linux 6.1 vmlinux and a busybox initramfs.
#
#   guest/build.sh [OUTDIR]          build (or fetch from the cache) into OUTDIR
#   guest/build.sh --print-key       print the cache key and exit
#
# OUTDIR defaults to guest/out. It receives:
#   vmlinux                 the kernel ELF (64-bit boot protocol / PVH entry)
#   initramfs.cpio          busybox, /init and the scripts it sources, newc; the VMM
#                           should load this one (inflating costs ~40 M guest
#                           instructions, half the boot)
#   initramfs.cpio.gz       the same, gzip -n -9
#   kernel.config           the full .config the kernel was built with
#   expected-workload.txt   the workload lines /init prints (computed on the host)
#   expected-disk.txt       the lines of the disk workload (ftkvm.work=disk), ditto
#   build-info.txt          versions, inputs and the cache key
#
# Cache: ${FTKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ftkvm}/
#   guest-<key>/   the complete result, keyed on every input (see cache_manifest)
#   kernel-<kkey>/ the kernel alone, keyed on the kernel inputs only (source,
#                  compiler, kernel.config, patches/*.patch, build.sh), so editing
#                  the initramfs sources repacks the initramfs without a rebuild
# Entries appear by rename(2) of a finished temp dir, under a per-key lock, so an
# interrupted or concurrent build never leaves or reads a half entry.
#
# Needs Debian/Ubuntu (apt): installs the packages below if they are missing.
# Environment: FTKVM_CACHE (cache root), FTKVM_KEEP_WORK=1 (keep the kernel tree),
# FTKVM_JOBS (make -j, default nproc).
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$GUEST_DIR/$(basename "${BASH_SOURCE[0]}")"

KVER=6.1
KSRC_PKG=linux-source-$KVER
KSRC_TAR=/usr/src/linux-source-$KVER.tar.xz
BUSYBOX_PKG=busybox-static
BUSYBOX_BIN=/bin/busybox
FRAGMENTS=("$GUEST_DIR/kernel.config")
# Kernel patches, applied in name order with patch -p1 --fuzz=0 (may be none).
shopt -s nullglob
PATCHES=("$GUEST_DIR"/patches/*.patch)
shopt -u nullglob
INITRAMFS_SRC=$GUEST_DIR/initramfs
# Scripts /init sources, packed as /NAME (0644).
INITRAMFS_SCRIPTS=(workload.sh disk.sh net.sh)
KARCH=x86_64
JOBS=${FTKVM_JOBS:-$(nproc)}

# Fixed build identity: the kernel embeds these in its version banner.
export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 1970"
export KBUILD_BUILD_USER=ftkvm
export KBUILD_BUILD_HOST=ftkvm
export KBUILD_BUILD_VERSION=1
export SOURCE_DATE_EPOCH=0
export LC_ALL=C TZ=UTC

PACKAGES=(
	"$KSRC_PKG" "$BUSYBOX_PKG"
	make gcc libc6-dev flex bison bc libelf-dev libssl-dev
	cpio xz-utils kmod gzip util-linux patch
)

START=$SECONDS
say() { printf '[guest-build %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'guest/build.sh: error: %s\n' "$*" >&2; exit 1; }

PRINT_KEY=0
OUTDIR=
for arg in "$@"; do
	case $arg in
	--print-key) PRINT_KEY=1 ;;
	-h | --help) sed -n '2,28p' "$SELF"; exit 0 ;;
	-*) die "unknown option $arg" ;;
	*) [[ -z $OUTDIR ]] || die "more than one OUTDIR given"; OUTDIR=$arg ;;
	esac
done
OUTDIR=${OUTDIR:-$GUEST_DIR/out}

CACHE_ROOT=${FTKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ftkvm}

# On any exit: stop a running kernel make and drop unfinished temp dirs.
MAKE_PGID=
TMPDIRS=()
cleanup() {
	[[ -z $MAKE_PGID ]] || kill -TERM -- "-$MAKE_PGID" 2>/dev/null || true
	[[ -z $MAKE_PGID ]] || wait 2>/dev/null || true
	local d
	for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- packages ---
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
pkg_version() { dpkg-query -W -f='${Version}' "$1"; }

ensure_packages() {
	local missing=() p
	command -v dpkg-query >/dev/null || die "dpkg-query not found: this script expects Debian/Ubuntu"
	for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
	((${#missing[@]})) || return 0
	say "installing missing packages: ${missing[*]}"
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	for p in "${missing[@]}"; do pkg_installed "$p" || die "package $p still not installed"; done
}

# ---------------------------------------------------------------- cache key ---
sha() { sha256sum | cut -d' ' -f1; }
filehash() { sha256sum <"$1" | cut -d' ' -f1; }

# Inputs of the kernel alone.
kernel_manifest() {
	local f
	echo "ftkvm-guest-kernel v1 arch=$KARCH"
	echo "kernel-source $KSRC_TAR size=$(stat -c %s "$KSRC_TAR") pkg=$KSRC_PKG version=$(pkg_version "$KSRC_PKG")"
	echo "compiler $(gcc --version | head -n1)"
	for f in "${FRAGMENTS[@]}"; do echo "fragment $(basename "$f") $(filehash "$f")"; done
	for f in "${PATCHES[@]}"; do echo "patch $(basename "$f") $(filehash "$f")"; done
	echo "build.sh $(filehash "$SELF")"
}

# Every input: the kernel's plus the initramfs sources and busybox.
cache_manifest() {
	local f m
	kernel_manifest
	echo "busybox $BUSYBOX_PKG version=$(pkg_version "$BUSYBOX_PKG") sha256=$(filehash "$BUSYBOX_BIN")"
	(cd "$INITRAMFS_SRC" && find . -type f | sort) | while read -r f; do
		# Only the exec bit: git does not keep other mode bits (umask varies).
		if [[ -x $INITRAMFS_SRC/$f ]]; then m=x; else m=-; fi
		echo "initramfs $f $m $(filehash "$INITRAMFS_SRC/$f")"
	done
}

# ---------------------------------------------------------------- helpers ---
# Run a command with its output in $LOG; on failure show the log's tail.
LOG=/dev/null
run_logged() {
	if ! "$@" >>"$LOG" 2>&1; then
		echo "---- last 40 lines of $LOG ----" >&2
		tail -n 40 "$LOG" >&2
		die "command failed: $*"
	fi
}

# Copy src to dst atomically (readers never see a partial file).
install_file() {
	cp -f "$1" "$2.tmp.$$"
	mv -f "$2.tmp.$$" "$2"
}

# Check that every assignment in the fragments survived olddefconfig.
verify_config() {
	local cfg=$1 frag line opt bad=0
	for frag in "${FRAGMENTS[@]}"; do
		while IFS= read -r line; do
			if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
				opt=${BASH_REMATCH[1]}
				if ! grep -qxF -- "$line" "$cfg"; then
					echo "  wanted: $line   got: $(grep -E "^(# )?$opt[= ]" "$cfg" || echo '(absent)')" >&2
					bad=1
				fi
			elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
				opt=${BASH_REMATCH[1]}
				if grep -qE "^$opt=" "$cfg"; then
					echo "  wanted: $line   got: $(grep -E "^$opt=" "$cfg")" >&2
					bad=1
				fi
			fi
		done <"$frag"
	done
	((bad == 0)) || die "kernel config fragment not honoured (options above); fix guest/kernel.config"
}

# ---------------------------------------------------------------- kernel ---
# Builds into $CACHE_ROOT/kernel-$KKEY (vmlinux, config, gen_init_cpio, build.log.gz).
build_kernel() {
	local final=$1 tmp=$1.tmp work src
	rm -rf "$tmp"
	TMPDIRS+=("$tmp")
	mkdir -p "$tmp"
	work=$tmp/work
	mkdir -p "$work"
	LOG=$tmp/build.log
	: >"$LOG"
	say "kernel: building (log: $LOG)"

	say "kernel: extracting $KSRC_TAR"
	run_logged tar -xf "$KSRC_TAR" -C "$work"
	src=$work/linux-source-$KVER
	[[ -d $src ]] || die "unexpected tarball layout: no linux-source-$KVER/ in $KSRC_TAR"
	local p
	for p in "${PATCHES[@]}"; do
		say "kernel: applying patches/${p##*/}"
		run_logged patch -p1 -d "$src" --batch --forward --fuzz=0 -i "$p"
	done

	say "kernel: make tinyconfig + merge ${FRAGMENTS[*]##*/} + olddefconfig"
	run_logged make -C "$src" ARCH=$KARCH tinyconfig
	(cd "$src" && run_logged env ARCH=$KARCH scripts/kconfig/merge_config.sh -m .config "${FRAGMENTS[@]}")
	run_logged make -C "$src" ARCH=$KARCH olddefconfig
	verify_config "$src/.config"
	say "kernel: config verified ($(grep -c '=y$' "$src/.config") options =y)"

	say "kernel: make -j$JOBS vmlinux (several minutes on 2 cores)"
	local t0=$SECONDS last=$SECONDS pid rc=0 n
	# Own process group, so an interrupted build.sh takes the compilers with it.
	setsid make -C "$src" ARCH=$KARCH -j"$JOBS" vmlinux >>"$LOG" 2>&1 &
	pid=$!
	MAKE_PGID=$pid
	while kill -0 "$pid" 2>/dev/null; do
		sleep 2
		if ((SECONDS - last >= 30)) && kill -0 "$pid" 2>/dev/null; then
			last=$SECONDS
			n=$(grep -c '^  CC ' "$LOG" || true)
			say "kernel:   ... $((SECONDS - t0))s, $n files compiled"
		fi
	done
	wait "$pid" || rc=$?
	MAKE_PGID=
	if ((rc != 0)); then
		echo "---- last 40 lines of $LOG ----" >&2
		tail -n 40 "$LOG" >&2
		die "kernel build failed (make exit $rc)"
	fi
	say "kernel: vmlinux built in $((SECONDS - t0))s"

	cp "$src/vmlinux" "$tmp/vmlinux"
	cp "$src/.config" "$tmp/config"
	run_logged gcc -O2 -o "$tmp/gen_init_cpio" "$src/usr/gen_init_cpio.c"
	{
		echo "kernel-key $KKEY"
		echo "kernel-release $(cat "$src/include/config/kernel.release")"
		echo "build-seconds $((SECONDS - t0))"
		kernel_manifest
	} >"$tmp/build-info.txt"
	if [[ ${FTKVM_KEEP_WORK:-0} == 1 ]]; then
		rm -rf "$CACHE_ROOT/work-kernel-$KKEY"
		mv "$work" "$CACHE_ROOT/work-kernel-$KKEY"
		say "kernel: tree kept in $CACHE_ROOT/work-kernel-$KKEY"
	else
		rm -rf "$work"
	fi
	gzip -n -9 "$LOG"
	LOG=/dev/null
	mv "$tmp" "$final"
	TMPDIRS=()
}

# ---------------------------------------------------------------- initramfs ---
# Packs the initramfs into $1/initramfs.cpio{,.gz} with the kernel's
# gen_init_cpio from an explicit file list: no root needed, owners 0:0, mtime 0,
# fixed order, so the bytes depend only on the inputs. Both forms are kept: the
# kernel boots either, but inflating the .gz costs the emulated guest ~40 M
# instructions (of ~80 M to power-off), so the VMM should load the plain cpio.
build_initramfs() {
	local out=$1 gen=$2 stage list applet f
	stage=$(mktemp -d "$CACHE_ROOT/initramfs-stage.XXXXXX")
	TMPDIRS+=("$stage")
	list=$stage/cpio_list
	mkdir -p "$stage/files"
	install -m 0755 "$BUSYBOX_BIN" "$stage/files/busybox"
	install -m 0755 "$INITRAMFS_SRC/init" "$stage/files/init"
	for f in "${INITRAMFS_SCRIPTS[@]}"; do
		install -m 0644 "$INITRAMFS_SRC/$f" "$stage/files/$f"
	done
	touch -h -d @0 "$stage/files/"*
	{
		echo "dir /bin 0755 0 0"
		echo "dir /dev 0755 0 0"
		echo "nod /dev/console 0600 0 0 c 5 1"
		echo "dir /mnt 0755 0 0"
		echo "dir /proc 0755 0 0"
		echo "dir /sys 0755 0 0"
		echo "dir /tmp 1777 0 0"
		echo "file /bin/busybox $stage/files/busybox 0755 0 0"
		# The list in a variable: `busybox --list | grep -q` fails under
		# pipefail when grep exits before busybox has written it all.
		local available
		available=$("$BUSYBOX_BIN" --list)
		grep -Ev '^[[:space:]]*(#|$)' "$INITRAMFS_SRC/applets" | sort -u | while read -r applet; do
			grep -qxF "$applet" <<<"$available" || die "busybox has no applet '$applet'"
			echo "slink /bin/$applet busybox 0777 0 0"
		done
		echo "file /init $stage/files/init 0755 0 0"
		for f in "${INITRAMFS_SCRIPTS[@]}"; do
			echo "file /$f $stage/files/$f 0644 0 0"
		done
	} >"$list"
	"$gen" -t 0 "$list" >"$out/initramfs.cpio"
	gzip -n -9 <"$out/initramfs.cpio" >"$out/initramfs.cpio.gz"
	sed "s|$stage/files/|<stage>/|" "$list" >"$out/initramfs.list"
	rm -rf "$stage"
}

# ---------------------------------------------------------------- main ---
for f in init applets "${INITRAMFS_SCRIPTS[@]}"; do
	[[ -f $INITRAMFS_SRC/$f ]] || die "missing initramfs source $INITRAMFS_SRC/$f"
done

ensure_packages
[[ -f $KSRC_TAR ]] || die "$KSRC_TAR missing although $KSRC_PKG is installed"
[[ -x $BUSYBOX_BIN ]] || die "$BUSYBOX_BIN missing although $BUSYBOX_PKG is installed"

KKEY=$(kernel_manifest | sha | cut -c1-20)
KEY=$(cache_manifest | sha | cut -c1-20)
if ((PRINT_KEY)); then
	echo "$KEY"
	exit 0
fi

mkdir -p "$CACHE_ROOT" "$OUTDIR"
ENTRY=$CACHE_ROOT/guest-$KEY
KENTRY=$CACHE_ROOT/kernel-$KKEY

publish() {
	local f
	for f in vmlinux initramfs.cpio initramfs.cpio.gz kernel.config expected-workload.txt expected-disk.txt build-info.txt; do
		install_file "$ENTRY/$f" "$OUTDIR/$f"
	done
}

if [[ -f $ENTRY/build-info.txt ]]; then
	publish
	echo "guest/build.sh: cache hit guest-$KEY ($ENTRY) -> $OUTDIR"
	exit 0
fi

# Serialize builds of the same key; a concurrent builder may finish it for us.
exec 9>"$CACHE_ROOT/.lock-$KEY"
if ! flock -n 9; then
	say "another build of guest-$KEY is running; waiting for it"
	flock 9
fi
if [[ -f $ENTRY/build-info.txt ]]; then
	publish
	echo "guest/build.sh: cache hit guest-$KEY ($ENTRY) -> $OUTDIR"
	exit 0
fi

say "cache miss: guest-$KEY (cache root $CACHE_ROOT)"
exec 8>"$CACHE_ROOT/.lock-kernel-$KKEY"
flock 8
if [[ -f $KENTRY/build-info.txt ]]; then
	say "kernel: reusing cached kernel-$KKEY"
else
	build_kernel "$KENTRY"
fi
flock -u 8

say "initramfs: packing busybox $(pkg_version "$BUSYBOX_PKG") + $(basename "$INITRAMFS_SRC")/"
TMP=$ENTRY.tmp
rm -rf "$TMP"
TMPDIRS+=("$TMP")
mkdir -p "$TMP"
ln "$KENTRY/vmlinux" "$TMP/vmlinux" 2>/dev/null || cp "$KENTRY/vmlinux" "$TMP/vmlinux"
cp "$KENTRY/config" "$TMP/kernel.config"
build_initramfs "$TMP" "$KENTRY/gen_init_cpio"
# The workload is deterministic shell arithmetic: compute its expected output
# with the same busybox on the host, for tests to compare against.
"$BUSYBOX_BIN" sh -c '. "$1"; ftkvm_workload' sh "$INITRAMFS_SRC/workload.sh" >"$TMP/expected-workload.txt"
# The disk workload's files are a pure function of their number: write and
# re-read them in a temp dir with the same functions and busybox the guest uses.
DISKDIR=$(mktemp -d "$CACHE_ROOT/disk-expected.XXXXXX")
TMPDIRS+=("$DISKDIR")
"$BUSYBOX_BIN" sh -c '. "$1"; ftkvm_disk_write "$2" && ftkvm_disk_verify "$2"' sh \
	"$INITRAMFS_SRC/disk.sh" "$DISKDIR" >"$TMP/expected-disk.txt" ||
	die "the disk workload failed on the host: $(tail -n 1 "$TMP/expected-disk.txt")"
grep -q '^FTKVM-GUEST: disk done ' "$TMP/expected-disk.txt" || die "expected-disk.txt has no 'disk done' line"
rm -rf "$DISKDIR"
{
	echo "key $KEY"
	echo "kernel-key $KKEY"
	grep -E '^(kernel-release|build-seconds) ' "$KENTRY/build-info.txt" | sed 's/^build-seconds/kernel-build-seconds/'
	echo "vmlinux-sha256 $(filehash "$TMP/vmlinux")"
	echo "initramfs.cpio-sha256 $(filehash "$TMP/initramfs.cpio")"
	echo "initramfs.cpio.gz-sha256 $(filehash "$TMP/initramfs.cpio.gz")"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
	echo "# inputs"
	cache_manifest
} >"$TMP/build-info.txt"
mv "$TMP" "$ENTRY"
TMPDIRS=()
publish
say "done: $OUTDIR/{vmlinux,initramfs.cpio,initramfs.cpio.gz} (cache guest-$KEY)"
