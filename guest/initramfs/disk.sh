# ftkvm example guest: the disk workload (ftkvm.work=disk), sourced by /init
# (busybox ash).
#
# ftkvm_disk_run formats /dev/vda with busybox mke2fs, mounts it (ext2) on /mnt,
# then ftkvm_disk_write writes /mnt/f1../mnt/f10, each followed by a sync, and
# ftkvm_disk_verify re-reads them after the page cache is dropped. Output lines
# (tests grep them):
#   FTKVM-GUEST: disk step N/10 <sha256 of fN>      N = 1..10
#   FTKVM-GUEST: disk done <sha256 of the sha256sum list "<sum>  fN" of f1..f10>
#   FTKVM-GUEST: disk check failed <fN: what>       a file read back differs
#   FTKVM-GUEST: disk failed <what>                 no device, mke2fs, mount, umount
#
# The content of fN is a pure function of N (ftkvm_disk_content). guest/build.sh
# runs ftkvm_disk_write and ftkvm_disk_verify on the host, in a temp dir, with
# the same busybox, to produce expected-disk.txt: the exact lines above. The
# host check of the image afterwards (internal/guestcheck) compares the files in
# it with the sums of those lines, so this file is the only definition of the
# content.
#
# Costs (valgrind --tool=lackey on the host, user instructions; see
# guest/README.md): sha256sum is ~69 instructions per byte in busybox, so the
# files are small (5.0-14.2 KiB, 93 KiB in all; f9 and f10 need an ext2
# indirect block) and the whole workload is ~18 M instructions.

# Every line of every file ends with this, so a 1 KiB ext2 block holds exactly
# 8 records; the 7-digit record numbers make each record of each file unique.
FTKVM_DISK_TAIL=' ftkvm disk workload record abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ...........................
'

# ftkvm_disk_content N: the content of fN on stdout: 8*(N+4) records
# 1000000+N*10000+i (i = 0, 1, ...), each but the last followed by
# FTKVM_DISK_TAIL (128 bytes a record). One seq, ~3 k instructions a record.
ftkvm_disk_content() {
	seq -s "$FTKVM_DISK_TAIL" $((1000000 + $1 * 10000)) $((1000000 + $1 * 10000 + 8 * ($1 + 4) - 1))
}

# ftkvm_disk_write DIR: writes DIR/f1..DIR/f10, syncs the filesystem after each
# and prints its step line. Leaves the "<sum>  fN" lines in ftkvm_disk_sums.
ftkvm_disk_write() {
	local n sum
	ftkvm_disk_sums=
	for n in 1 2 3 4 5 6 7 8 9 10; do
		ftkvm_disk_content $n >"$1/f$n" || return 1
		sync -f "$1" || return 1
		sum=$(sha256sum "$1/f$n") || return 1
		sum=${sum%% *}
		ftkvm_disk_sums="$ftkvm_disk_sums$sum  f$n
"
		echo "FTKVM-GUEST: disk step $n/10 $sum"
	done
}

# ftkvm_disk_verify DIR: re-reads DIR/f1..f10 (one sha256sum) and compares with
# ftkvm_disk_sums; prints the done or the check-failed line.
ftkvm_disk_verify() {
	local got want w g
	got=$(cd "$1" && sha256sum f1 f2 f3 f4 f5 f6 f7 f8 f9 f10)
	want=${ftkvm_disk_sums%?}
	if [ "$got" = "$want" ]; then
		got=$(printf '%s\n' "$want" | sha256sum)
		echo "FTKVM-GUEST: disk done ${got%% *}"
		return 0
	fi
	# Name the first file that differs ("<sum>  fN" lines, f1 first).
	set -f
	local IFS='
'
	set -- $got
	for w in $want; do
		g=$1
		[ $# = 0 ] || shift
		[ "$g" = "$w" ] && continue
		set +f
		if [ "${g#*  }" = "${w#*  }" ]; then
			echo "FTKVM-GUEST: disk check failed ${w#*  }: sha256 ${g%%  *} want ${w%%  *}"
		else
			echo "FTKVM-GUEST: disk check failed ${w#*  }: unreadable"
		fi
		return 1
	done
	set +f
	echo "FTKVM-GUEST: disk check failed extra sha256sum output"
	return 1
}

# ftkvm_disk_drop_caches: after a sync, so that the re-read comes from the disk.
ftkvm_disk_drop_caches() {
	echo 3 >/proc/sys/vm/drop_caches
}

# ftkvm_disk_run [DEV [MNT]]: the whole guest workload on DEV (/dev/vda) mounted
# on MNT (/mnt). DEV is always formatted: busybox mke2fs costs ~0.2 M
# instructions, and the run then starts from the same state whatever the image
# held (zeroes, or an ext2 left by an earlier or interrupted run).
ftkvm_disk_run() {
	local dev=${1:-/dev/vda} mnt=${2:-/mnt} rc=0
	if [ ! -b "$dev" ]; then
		echo "FTKVM-GUEST: disk failed no block device $dev"
		return 1
	fi
	if ! mke2fs -F "$dev" >/tmp/mke2fs.log 2>&1; then
		echo "FTKVM-GUEST: disk failed mke2fs $dev"
		cat /tmp/mke2fs.log
		return 1
	fi
	if ! mount -t ext2 "$dev" "$mnt"; then
		echo "FTKVM-GUEST: disk failed mount $dev"
		return 1
	fi
	if ! ftkvm_disk_write "$mnt"; then
		echo "FTKVM-GUEST: disk failed writing $mnt"
		rc=1
	elif ! sync || ! ftkvm_disk_drop_caches; then
		echo "FTKVM-GUEST: disk failed dropping the page cache"
		rc=1
	else
		ftkvm_disk_verify "$mnt" || rc=1
	fi
	if ! umount "$mnt"; then
		echo "FTKVM-GUEST: disk failed umount $mnt"
		rc=1
	fi
	return $rc
}

# The disk benchmark (ftkvm.work=diskbench): cmd/bench-devices times it from
# the host, by when its lines appear on the console. O_DIRECT, so every block
# is a virtio-blk request and nothing is served from the page cache:
#   FTKVM-GUEST: diskbench start
#   FTKVM-GUEST: diskbench write done   4 MiB written sequentially, 256 KiB requests, then flushed
#   FTKVM-GUEST: diskbench read done    the same 4 MiB read back, 256 KiB requests
#   FTKVM-GUEST: diskbench iops done    512 synchronous 4 KiB writes (one request each)
#   FTKVM-GUEST: diskbench failed <what>

ftkvm_diskbench_run() {
	local dev=${1:-/dev/vda}
	if [ ! -b "$dev" ]; then
		echo "FTKVM-GUEST: diskbench failed no block device $dev"
		return 1
	fi
	echo "FTKVM-GUEST: diskbench start"
	dd if=/dev/zero of="$dev" bs=256k count=16 oflag=direct conv=fsync 2>/dev/null ||
		{ echo "FTKVM-GUEST: diskbench failed write"; return 1; }
	echo "FTKVM-GUEST: diskbench write done"
	dd if="$dev" of=/dev/null bs=256k count=16 iflag=direct 2>/dev/null ||
		{ echo "FTKVM-GUEST: diskbench failed read"; return 1; }
	echo "FTKVM-GUEST: diskbench read done"
	dd if=/dev/zero of="$dev" bs=4k count=512 oflag=direct 2>/dev/null ||
		{ echo "FTKVM-GUEST: diskbench failed iops"; return 1; }
	echo "FTKVM-GUEST: diskbench iops done"
}
