package guestcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// DiskFiles is the number of files the disk workload writes: /f1 .. /f10.
const DiskFiles = 10

// Marker lines of the disk workload (guest/initramfs/disk.sh).
const (
	MarkerDiskStep        = "FTKVM-GUEST: disk step "        // + "N/10 <sha256 of fN>"
	MarkerDiskDone        = "FTKVM-GUEST: disk done "        // + "<combined>" (Disk.CombinedSum)
	MarkerDiskCheckFailed = "FTKVM-GUEST: disk check failed" // + " fN: <what>": a file read back differs
	MarkerDiskFailed      = "FTKVM-GUEST: disk failed"       // + " <what>": no device, mke2fs, mount, umount
)

// Disk is what the disk workload reports: the sha256 of each file it wrote
// and the combined checksum of its "disk done" line. The files' content is
// defined by guest/initramfs/disk.sh alone; guest/build.sh runs it on the
// host to write expected-disk.txt, which ExpectedDisk reads.
type Disk struct {
	Files    [DiskFiles][sha256.Size]byte // Files[n-1] is the sha256 of /fn
	Combined [sha256.Size]byte
}

// CombinedSum is the checksum the "disk done" line must carry: the sha256
// of the list that `sha256sum f1 ... f10` prints ("<hex>  fN\n" lines).
func (d Disk) CombinedSum() [sha256.Size]byte {
	var list strings.Builder
	for i, s := range d.Files {
		fmt.Fprintf(&list, "%x  f%d\n", s, i+1)
	}
	return sha256.Sum256([]byte(list.String()))
}

// ParseDisk reads the disk workload's marker lines out of text (a console
// log or expected-disk.txt; other lines and \r are ignored). It wants the
// ten step lines once each and in order, then the done line with the
// matching combined checksum; a failure line the guest printed is returned
// as an error.
func ParseDisk(text string) (Disk, error) {
	var d Disk
	next := 1 // the step line expected next
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if i := strings.Index(line, MarkerDiskStep); i >= 0 {
			rest := line[i+len(MarkerDiskStep):]
			var n, of int
			var sum string
			if _, err := fmt.Sscanf(rest, "%d/%d %s", &n, &of, &sum); err != nil || of != DiskFiles {
				return d, fmt.Errorf("disk: malformed step line %q", line)
			}
			if n != next || n > DiskFiles {
				return d, fmt.Errorf("disk: step %d/%d where step %d was due (a step repeated, lost or out of order)", n, of, next)
			}
			if err := parseSum(&d.Files[n-1], sum); err != nil {
				return d, fmt.Errorf("disk: step %d: %v", n, err)
			}
			next++
		} else if i := strings.Index(line, MarkerDiskDone); i >= 0 {
			if next <= DiskFiles {
				return d, fmt.Errorf("disk: done line after %d of %d steps", next-1, DiskFiles)
			}
			if err := parseSum(&d.Combined, strings.TrimSpace(line[i+len(MarkerDiskDone):])); err != nil {
				return d, fmt.Errorf("disk: done line: %v", err)
			}
			if d.Combined != d.CombinedSum() {
				return d, fmt.Errorf("disk: done checksum %x does not match the step checksums (want %x)", d.Combined, d.CombinedSum())
			}
			return d, nil
		} else if i := strings.Index(line, MarkerDiskCheckFailed); i >= 0 {
			return d, fmt.Errorf("disk: the guest's re-read failed: %s", line[i:])
		} else if i := strings.Index(line, MarkerDiskFailed); i >= 0 {
			return d, fmt.Errorf("disk: the guest's workload failed: %s", line[i:])
		}
	}
	return d, fmt.Errorf("disk: no done line (after %d of %d steps)", next-1, DiskFiles)
}

func parseSum(dst *[sha256.Size]byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("bad sha256 %q", s)
	}
	copy(dst[:], b)
	return nil
}

// ExpectedDisk reads what the disk workload prints from the file
// guest/build.sh writes (OUTDIR/expected-disk.txt).
func ExpectedDisk(path string) (Disk, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Disk{}, err
	}
	d, err := ParseDisk(string(b))
	if err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// toolDirs are searched after $PATH: e2fsprogs installs into /sbin, which a
// non-root user's PATH often lacks.
var toolDirs = []string{"/usr/sbin", "/sbin"}

// e2tool finds an e2fsprogs program.
func e2tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range toolDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH or %s: install the Debian package e2fsprogs", name, strings.Join(toolDirs, ", "))
}

// CheckImage checks, without root, the ext2 image the disk workload left
// (after the guest unmounted it): `e2fsck -fn` must find it clean, and
// /f1 .. /f10, read with `debugfs -R "cat /fN"`, must have the checksums in
// want. The error names every file that differs.
func CheckImage(ctx context.Context, image string, want Disk) error {
	e2fsck, err := e2tool("e2fsck")
	if err != nil {
		return err
	}
	debugfs, err := e2tool("debugfs")
	if err != nil {
		return err
	}
	if _, err := os.Stat(image); err != nil {
		return err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, e2fsck, "-fn", image)
	cmd.Stdout, cmd.Stderr, cmd.Env = &out, &out, append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: e2fsck -fn: %v (the filesystem is not clean):\n%s", image, err, lastLines(out.String(), 20))
	}
	var bad []error
	for n := 1; n <= DiskFiles; n++ {
		name := "/f" + strconv.Itoa(n)
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, debugfs, "-R", "cat "+name, image)
		cmd.Stdout, cmd.Stderr, cmd.Env = &stdout, &stderr, append(os.Environ(), "LC_ALL=C")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: debugfs -R %q: %v: %s", image, "cat "+name, err, strings.TrimSpace(stderr.String()))
		}
		if got := sha256.Sum256(stdout.Bytes()); got != want.Files[n-1] {
			msg := fmt.Sprintf("%s: %d bytes with sha256 %x, want %x", name, stdout.Len(), got, want.Files[n-1])
			if s := debugfsMessages(stderr.String()); s != "" {
				msg += " (debugfs: " + s + ")"
			}
			bad = append(bad, errors.New(msg))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s: %w", image, errors.Join(bad...))
	}
	return nil
}

// debugfsMessages drops debugfs's version banner from its stderr: what is
// left says why a read failed (debugfs exits 0 even for a missing file).
func debugfsMessages(stderr string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
