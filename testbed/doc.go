// Package testbed runs commands inside a software-emulated x86 host that
// has a standard KVM: QEMU with TCG (no hardware virtualization needed)
// emulating an AMD CPU with SVM and nested paging (-cpu EPYC,+svm,+npt),
// booting Debian's stock kernel, which loads kvm_amd and so offers
// /dev/kvm inside.
//
// # Why
//
// The project's machines (developers' and CI's) run a kernel that is itself
// a guest and offer no /dev/kvm, yet ftkvm is a KVM-based VMM whose tests
// and demo need one. QEMU's TCG can emulate SVM but not VMX, so the
// emulated host is an AMD one; the KVM inside is the unmodified upstream
// kvm_amd that real users run, not a special-purpose stand-in. Guest code
// runs under TCG translation (slow but faithful); a VM exit to the VMM and
// back costs about 0.1 ms (0.6-0.9 ms before the host got a periodic tick). See DESIGN.md, "December 2026", for the measurements.
//
// # What the script sees
//
// A chroot view of this machine's filesystem: / is shared read-only over
// 9p (multidevs=remap, so inode numbers of different filesystems do not
// collide) with a tmpfs overlay on top, so the script finds the same Go,
// gcc, repository and build outputs as outside and may write anywhere, but
// its writes vanish with the host. Options.Dir, if set, is shared
// read-write at the same absolute path and is the working directory; it is
// the way to bring files back. /proc, /sys, /dev (with /dev/kvm), lo up,
// PATH including /usr/local/go/bin, HOME=/root and Options.Env complete the
// environment. There is no route off the host: the only network is
// loopback and, with Options.Link, a private Ethernet link to one other
// emulated host (IPv6 link-local addresses only).
//
// The script's stdout and stderr go to the emulated serial console and
// stream live to Options.Console; they are also returned in
// Result.Output. Nothing else (firmware, kernel, init) is shown unless the
// host fails, in which case the error carries the tail of the boot log.
//
// # Use
//
//	res, err := testbed.Run(ctx, testbed.Options{
//		Script:  "ls -l /dev/kvm && go test ./vmm",
//		Dir:     repoRoot,
//		Timeout: 20 * time.Minute,
//		Console: os.Stdout,
//	})
//	// err: the host could not run the script (not set up, no /dev/kvm
//	// inside, timed out, crashed); otherwise res.ExitStatus is the script's.
//
// For tests across two hosts (host death, network partition), Start a host
// in the background, join two hosts with Options.Link, and Kill one: that is
// SIGKILL of its QEMU, a silent host death (no TCP reset reaches the peer).
//
// # Setup and cache
//
// The host needs Debian's qemu-system-x86, linux-image-amd64,
// busybox-static and kmod; Setup installs whichever are missing (apt-get)
// and builds the host's initramfs: busybox, the kernel modules for KVM,
// 9p, virtio and overlayfs, and init.sh. The initramfs is cached under
// ${FTKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ftkvm}/testbed-<key>/,
// keyed on the kernel version and the contents of every file in it; Run
// builds it on first use if Setup did not. `go run ./cmd/testbed setup`
// runs Setup from the command line.
//
// # Limits
//
// One vCPU per host: with -smp 2 a host once soft-locked in KVM_RUN. Every
// run has a wall-clock timeout (Options.Timeout, default DefaultTimeout),
// after which QEMU's whole process group is killed.
package testbed
