package testbed

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Packages are the Debian packages an emulated host needs: QEMU, the stock
// kernel (with its modules, among them kvm_amd), a static busybox for the
// initramfs, and kmod for modprobe --show-depends. The initramfs is written
// by this package, so cpio is not needed.
var Packages = []string{"qemu-system-x86", "linux-image-amd64", "busybox-static", "kmod"}

// Modules are the kernel modules the host's init loads (with their
// dependencies, in modprobe's order): KVM itself, 9p over virtio for
// sharing this machine's files, overlayfs to make them writable, and
// virtio-net for the link between two hosts.
var Modules = []string{"kvm-amd", "9p", "9pnet_virtio", "virtio_pci", "overlay", "virtio_net"}

const (
	qemuBinary  = "qemu-system-x86_64"
	busyboxPath = "/bin/busybox"
	setupHint   = "run `go run ./cmd/testbed setup` (installs the Debian packages qemu-system-x86, linux-image-amd64, busybox-static, kmod)"
)

//go:embed init.sh
var initScript []byte

// Available reports whether an emulated host can start here: QEMU, a
// Debian kernel with its modules, busybox and modprobe. It does not install
// anything; Setup does.
func Available() error {
	var missing []string
	if _, err := exec.LookPath(qemuBinary); err != nil {
		missing = append(missing, qemuBinary+" (package qemu-system-x86)")
	}
	if _, err := hostKernel(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		missing = append(missing, busyboxPath+" (package busybox-static)")
	}
	if _, err := modprobePath(); err != nil {
		missing = append(missing, "modprobe (package kmod)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("testbed: cannot start an emulated host: missing %s; %s", strings.Join(missing, ", "), setupHint)
	}
	return nil
}

// Setup installs the missing Packages (apt-get, as root or via sudo) and
// builds the cached image, telling progress (nil: silent) what it installs
// or builds; when all is in place it is quick and says nothing.
func Setup(progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	if err := installPackages(progress); err != nil {
		return err
	}
	if err := Available(); err != nil {
		return err
	}
	img, built, err := ensureImage()
	if err != nil {
		return err
	}
	if built {
		fmt.Fprintf(progress, "testbed: built the emulated host's image: kernel %s, initramfs %s\n", img.kernel, img.initrd)
		if img.note != "" {
			fmt.Fprintf(progress, "testbed: note: %s\n", img.note)
		}
	}
	return nil
}

// Describe says which kernel and initramfs a host boots (after Setup).
func Describe() (string, error) {
	img, _, err := ensureImage()
	if err != nil {
		return "", err
	}
	s := fmt.Sprintf("kernel %s, initramfs %s", img.kernel, img.initrd)
	if img.note != "" {
		s += " (" + img.note + ")"
	}
	return s, nil
}

func installPackages(progress io.Writer) error {
	var missing []string
	for _, p := range Packages {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("testbed: missing packages %s and no apt-get: install them by hand", strings.Join(missing, " "))
	}
	var sudo []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			return fmt.Errorf("testbed: need root (or sudo) to install %s", strings.Join(missing, " "))
		}
		sudo = []string{"sudo"}
	}
	fmt.Fprintf(progress, "testbed: installing %s\n", strings.Join(missing, " "))
	// The lock timeout: another apt or dpkg may hold the lock for a while.
	apt := []string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", "DPkg::Lock::Timeout=300"}
	for _, args := range [][]string{
		{"update", "-qq"},
		append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...),
	} {
		argv := append(append(append([]string{}, sudo...), apt...), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("testbed: %s: %v\n%s", strings.Join(argv, " "), err, tail(out.String(), 30))
		}
	}
	return nil
}

// hostKernel is the newest kernel version with both /boot/vmlinuz-V and
// /lib/modules/V.
func hostKernel() (string, error) {
	ents, _ := os.ReadDir("/lib/modules")
	var vers []string
	for _, e := range ents {
		if _, err := os.Stat("/boot/vmlinuz-" + e.Name()); err == nil {
			vers = append(vers, e.Name())
		}
	}
	if len(vers) == 0 {
		return "", errors.New("a kernel with modules (/boot/vmlinuz-V and /lib/modules/V; package linux-image-amd64)")
	}
	sort.Slice(vers, func(i, j int) bool { return versionLess(vers[i], vers[j]) })
	return vers[len(vers)-1], nil
}

// versionLess orders kernel versions numerically where they hold digits
// ("6.1.0-9" before "6.1.0-10").
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da != db {
			return da
		}
		i, j := run(a, da), run(b, db)
		pa, pb := a[:i], b[:j]
		if da {
			pa, pb = strings.TrimLeft(pa, "0"), strings.TrimLeft(pb, "0")
			if len(pa) != len(pb) {
				return len(pa) < len(pb)
			}
		}
		if pa != pb {
			return pa < pb
		}
		a, b = a[i:], b[j:]
	}
	return len(a) < len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func run(s string, digits bool) int {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return i
}

func modprobePath() (string, error) {
	if p, err := exec.LookPath("modprobe"); err == nil {
		return p, nil
	}
	// Not on a non-root user's PATH on Debian.
	for _, p := range []string{"/usr/sbin/modprobe", "/sbin/modprobe"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("modprobe not found")
}

// moduleFiles lists the module files for Modules in load order, without
// repeats.
func moduleFiles(kver string) ([]string, error) {
	mp, err := modprobePath()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, m := range Modules {
		cmd := exec.Command(mp, "-S", kver, "--show-depends", m)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("testbed: modprobe -S %s --show-depends %s: %v %s", kver, m, err, stderr.String())
		}
	}
	return parseShowDepends(out.String()), nil
}

// parseShowDepends takes the files of modprobe --show-depends output
// ("insmod FILE [params]" lines; "builtin NAME" ones need nothing), first
// occurrence first, so dependencies stay ahead of their users.
func parseShowDepends(s string) []string {
	var files []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "insmod" && !seen[f[1]] {
			seen[f[1]] = true
			files = append(files, f[1])
		}
	}
	return files
}

// image is what QEMU boots: a kernel and the initramfs built for it.
type image struct {
	kernel string // the cached vmlinux (PVH boot), else /boot/vmlinuz-V
	initrd string // the initramfs (uncompressed newc cpio)
	key    string
	note   string // why the kernel is not the fast one, if it is not
}

// cacheRoot matches guest/build.sh, so both caches live side by side.
func cacheRoot() (string, error) {
	if d := os.Getenv("FTKVM_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir() // $XDG_CACHE_HOME or $HOME/.cache
	if err != nil {
		return "", fmt.Errorf("testbed: no cache directory (set FTKVM_CACHE): %w", err)
	}
	return filepath.Join(d, "ftkvm"), nil
}

// cacheManifest names every input of the initramfs; its hash is the cache
// key. File contents are hashed, not dates, so an updated package of the
// same version still makes a new entry.
func cacheManifest(kver, kernelSum, busyboxSum string, modules [][2]string, init []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ftkvm-testbed-image v1\nkernel %s %s\nbusybox %s\n", kver, kernelSum, busyboxSum)
	for _, m := range modules {
		fmt.Fprintf(&b, "module %s %s\n", m[0], m[1])
	}
	fmt.Fprintf(&b, "init %s\n", sum(init))
	return b.String()
}

func cacheKey(manifest string) string { return sum([]byte(manifest))[:20] }

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ensureImage returns the cached image for the current kernel, building it
// first if needed (built reports that): the initramfs and, where the
// kernel allows, its uncompressed ELF. An entry appears by rename of a
// finished temporary directory, so concurrent builders never see half an
// entry; the loser of a race uses the winner's.
func ensureImage() (img image, built bool, err error) {
	kver, err := hostKernel()
	if err != nil {
		return img, false, fmt.Errorf("testbed: missing %v; %s", err, setupHint)
	}
	bzPath := "/boot/vmlinuz-" + kver
	bz, err := os.ReadFile(bzPath)
	if err != nil {
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	files, err := moduleFiles(kver)
	if err != nil {
		return img, false, err
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return img, false, fmt.Errorf("testbed: %v; %s", err, setupHint)
	}
	var mods [][2]string
	contents := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return img, false, fmt.Errorf("testbed: reading module: %v", err)
		}
		name := filepath.Base(f)
		if _, dup := contents[name]; dup {
			return img, false, fmt.Errorf("testbed: two modules named %s", name)
		}
		contents[name] = data
		mods = append(mods, [2]string{name, sum(data)})
	}
	manifest := cacheManifest(kver, sum(bz), sum(bb), mods, initScript)
	img.key = cacheKey(manifest)
	root, err := cacheRoot()
	if err != nil {
		return img, false, err
	}
	entry := filepath.Join(root, "testbed-"+img.key)
	img.initrd = filepath.Join(entry, "initramfs.cpio")
	found := func() (image, bool, error) {
		img.kernel = filepath.Join(entry, "vmlinux")
		if _, err := os.Stat(img.kernel); err != nil {
			img.kernel = bzPath
			note, _ := os.ReadFile(filepath.Join(entry, "kernel-note.txt"))
			img.note = strings.TrimSpace(string(note))
		}
		return img, built, nil
	}
	if _, err := os.Stat(filepath.Join(entry, "manifest.txt")); err == nil {
		return found()
	}

	if err := os.MkdirAll(root, 0o755); err != nil {
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".testbed-"+img.key+".tmp")
	if err != nil {
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	defer os.RemoveAll(tmp) // after a successful rename, a no-op
	var order strings.Builder
	var cpio cpioWriter
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "modules"} {
		cpio.dir(d)
	}
	// The kernel opens /dev/console for init before any devtmpfs exists.
	cpio.charDev("dev/console", 0o600, 5, 1)
	cpio.file("bin/busybox", 0o755, bb)
	cpio.file("init", 0o755, initScript)
	for _, m := range mods {
		cpio.file("modules/"+m[0], 0o644, contents[m[0]])
		order.WriteString(m[0] + "\n")
	}
	cpio.file("modules/order", 0o644, []byte(order.String()))
	if err := os.WriteFile(filepath.Join(tmp, "initramfs.cpio"), cpio.finish(), 0o644); err != nil {
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	if vmlinux, err := extractVmlinux(bz); err == nil {
		err = os.WriteFile(filepath.Join(tmp, "vmlinux"), vmlinux, 0o644)
		if err != nil {
			return img, false, fmt.Errorf("testbed: %w", err)
		}
	} else {
		// Still bootable, only slower: QEMU boots the bzImage.
		note := fmt.Sprintf("booting %s compressed (slow under TCG): %v", bzPath, err)
		if err := os.WriteFile(filepath.Join(tmp, "kernel-note.txt"), []byte(note+"\n"), 0o644); err != nil {
			return img, false, fmt.Errorf("testbed: %w", err)
		}
	}
	// Last: its presence marks a complete entry.
	if err := os.WriteFile(filepath.Join(tmp, "manifest.txt"), []byte(manifest), 0o644); err != nil {
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	if err := os.Rename(tmp, entry); err != nil {
		if _, serr := os.Stat(filepath.Join(entry, "manifest.txt")); serr == nil {
			return found() // a concurrent build won
		}
		return img, false, fmt.Errorf("testbed: %w", err)
	}
	built = true
	return found()
}

// cpioWriter writes a newc ("070701") archive, the format the kernel
// unpacks as initramfs: owners 0, mtime 0, so the bytes depend only on the
// contents.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

func (w *cpioWriter) entry(name string, mode uint32, rmaj, rmin int, data []byte) {
	w.ino++
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string) { w.entry(name, 0o040755, 0, 0, nil) }
func (w *cpioWriter) file(name string, perm uint32, data []byte) {
	w.entry(name, 0o100000|perm, 0, 0, data)
}
func (w *cpioWriter) charDev(name string, perm uint32, major, minor int) {
	w.entry(name, 0o020000|perm, major, minor, nil)
}

func (w *cpioWriter) finish() []byte {
	w.ino = -1 // the trailer's inode is 0
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	return w.buf.Bytes()
}
