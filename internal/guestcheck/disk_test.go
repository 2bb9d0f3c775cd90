package guestcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// diskText is what the guest prints for d.
func diskText(d Disk) string {
	var b strings.Builder
	for i, s := range d.Files {
		fmt.Fprintf(&b, "%s%d/%d %x\n", MarkerDiskStep, i+1, DiskFiles, s)
	}
	fmt.Fprintf(&b, "%s%x\n", MarkerDiskDone, d.CombinedSum())
	return b.String()
}

// testFiles is made-up content for /f1../f10: 5-14 KiB, every 64-byte
// record unique and tagged with its file, so a test can find it in an image.
func testFiles() [DiskFiles][]byte {
	var files [DiskFiles][]byte
	for n := 1; n <= DiskFiles; n++ {
		var b bytes.Buffer
		for i := 0; b.Len() < (n+4)<<10; i++ {
			fmt.Fprintf(&b, "FILE-%02d-RECORD-%05d %41s\n", n, i, "guestcheck test data")
		}
		files[n-1] = b.Bytes()
	}
	return files
}

func diskOf(files [DiskFiles][]byte) Disk {
	var d Disk
	for i, f := range files {
		d.Files[i] = sha256.Sum256(f)
	}
	d.Combined = d.CombinedSum()
	return d
}

func TestParseDisk(t *testing.T) {
	d := diskOf(testFiles())
	good := diskText(d)
	got, err := ParseDisk("Linux version 6.1\r\nFTKVM-GUEST: init started\r\n" + strings.ReplaceAll(good, "\n", "\r\n") + "FTKVM-GUEST: powering off\n")
	if err != nil || got != d {
		t.Fatalf("ParseDisk(good) = %v, %v", got, err)
	}
	lines := strings.SplitAfter(good, "\n")
	bad := []struct{ name, text, want string }{
		{"no lines", "FTKVM-GUEST: init started\n", "no done line (after 0 of 10 steps)"},
		{"step lost", strings.Replace(good, lines[3], "", 1), "step 5/10 where step 4 was due"},
		{"step repeated", strings.Replace(good, lines[3], lines[3]+lines[3], 1), "step 4/10 where step 5 was due"},
		{"step after the last", strings.Replace(good, lines[9], lines[9]+MarkerDiskStep+"11/10 "+strings.Repeat("0", 64)+"\n", 1), "step 11/10 where step 11 was due"},
		{"done early", lines[0] + lines[10], "done line after 1 of 10 steps"},
		{"bad sum", strings.Replace(good, lines[1], MarkerDiskStep+"2/10 xyz\n", 1), `step 2: bad sha256 "xyz"`},
		{"malformed", strings.Replace(good, lines[1], MarkerDiskStep+"2 of 10\n", 1), "malformed step line"},
		{"done mismatch", strings.Replace(good, fmt.Sprintf("%x", d.Files[6]), fmt.Sprintf("%x", d.Files[7]), 1), "does not match the step checksums"},
		{"check failed", strings.Join(lines[:10], "") + "FTKVM-GUEST: disk check failed f3: unreadable\n", "re-read failed: FTKVM-GUEST: disk check failed f3: unreadable"},
		{"failed", "FTKVM-GUEST: disk failed no block device /dev/vda\n", "workload failed: FTKVM-GUEST: disk failed no block device"},
	}
	for _, tc := range bad {
		if _, err := ParseDisk(tc.text); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// needE2fsprogs returns mke2fs, or skips when e2fsprogs is missing.
func needE2fsprogs(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"e2fsck", "debugfs"} {
		if _, err := e2tool(name); err != nil {
			t.Skip(err)
		}
	}
	mke2fs, err := e2tool("mke2fs")
	if err != nil {
		t.Skip(err)
	}
	return mke2fs
}

// makeImage builds a 4 MiB ext2 image (1 KiB blocks, as busybox mke2fs
// makes on the guest's small disk) holding the files of dir, without root.
func makeImage(t *testing.T, mke2fs, dir string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	cmd := exec.Command(mke2fs, "-q", "-F", "-t", "ext2", "-b", "1024", "-d", dir, img, "4096")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, out)
	}
	return img
}

func writeFiles(t *testing.T, files [DiskFiles][]byte, skip int) string {
	t.Helper()
	dir := t.TempDir()
	for i, f := range files {
		if i+1 == skip {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i+1)), f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCheckImage(t *testing.T) {
	mke2fs := needE2fsprogs(t)
	ctx := context.Background()
	files := testFiles()
	want := diskOf(files)
	good := makeImage(t, mke2fs, writeFiles(t, files, 0))
	if err := CheckImage(ctx, good, want); err != nil {
		t.Fatalf("good image: %v", err)
	}

	// Each bad image must be told from the good one, naming what is wrong.
	copyImage := func(t *testing.T) (string, []byte) {
		b, err := os.ReadFile(good)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "bad.img")
		return p, b
	}
	t.Run("data byte flipped", func(t *testing.T) {
		p, b := copyImage(t)
		i := bytes.Index(b, []byte("FILE-03-RECORD-00100"))
		if i < 0 {
			t.Fatal("record not found in the image")
		}
		b[i+len("FILE-03-RECORD-00100")+5] ^= 1
		os.WriteFile(p, b, 0o644)
		err := CheckImage(ctx, p, want)
		if err == nil || !strings.Contains(err.Error(), "/f3: ") || strings.Contains(err.Error(), "/f4: ") || strings.Contains(err.Error(), "e2fsck") {
			t.Fatalf("got %v, want /f3 (only) named; e2fsck cannot see data", err)
		}
		t.Log(err)
	})
	t.Run("block of f9 zeroed", func(t *testing.T) {
		p, b := copyImage(t)
		i := bytes.Index(b, []byte("FILE-09-RECORD-00150"))
		if i < 0 {
			t.Fatal("record not found in the image")
		}
		clear(b[i/1024*1024 : i/1024*1024+1024]) // a lost write
		os.WriteFile(p, b, 0o644)
		if err := CheckImage(ctx, p, want); err == nil || !strings.Contains(err.Error(), "/f9: ") {
			t.Fatalf("got %v, want /f9 named", err)
		}
	})
	t.Run("link count wrong", func(t *testing.T) {
		p, b := copyImage(t)
		os.WriteFile(p, b, 0o644)
		debugfs, _ := e2tool("debugfs")
		if out, err := exec.Command(debugfs, "-w", "-R", "set_inode_field /f5 links_count 7", p).CombinedOutput(); err != nil {
			t.Fatalf("debugfs -w: %v\n%s", err, out)
		}
		err := CheckImage(ctx, p, want)
		if err == nil || !strings.Contains(err.Error(), "e2fsck -fn") {
			t.Fatalf("got %v, want e2fsck's complaint", err)
		}
		t.Log(err)
	})
	t.Run("file missing", func(t *testing.T) {
		p := makeImage(t, mke2fs, writeFiles(t, files, 10))
		err := CheckImage(ctx, p, want)
		if err == nil || !strings.Contains(err.Error(), "/f10: 0 bytes") || !strings.Contains(err.Error(), "File not found") {
			t.Fatalf("got %v, want /f10 missing", err)
		}
		t.Log(err)
	})
	t.Run("other expectations", func(t *testing.T) {
		other := want
		other.Files[1][0] ^= 0xff
		if err := CheckImage(ctx, good, other); err == nil || !strings.Contains(err.Error(), "/f2: ") {
			t.Fatalf("got %v, want /f2 named", err)
		}
	})
	t.Run("no image", func(t *testing.T) {
		if err := CheckImage(ctx, filepath.Join(t.TempDir(), "none.img"), want); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestCheckImageWithoutE2fsprogs(t *testing.T) {
	saved := toolDirs
	defer func() { toolDirs = saved }()
	toolDirs = []string{t.TempDir()}
	t.Setenv("PATH", t.TempDir())
	err := CheckImage(context.Background(), "any.img", Disk{})
	if err == nil || !strings.Contains(err.Error(), "e2fsprogs") {
		t.Fatalf("got %v, want the Debian package named", err)
	}
}

// The guest's own script, run on the host with busybox as guest/build.sh
// does: its output parses, and an image holding the files it wrote passes
// CheckImage. An image as the guest's busybox mke2fs formats it is clean
// for e2fsck.
func TestGuestDiskScript(t *testing.T) {
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("no /bin/busybox (Debian package busybox-static)")
	}
	mke2fs := needE2fsprogs(t)
	dir := t.TempDir()
	out, err := exec.Command(busybox, "sh", "-c", `. "$1"; ftkvm_disk_write "$2" && ftkvm_disk_verify "$2"`,
		"sh", "../../guest/initramfs/disk.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("disk.sh: %v\n%s", err, out)
	}
	want, err := ParseDisk(string(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := CheckImage(context.Background(), makeImage(t, mke2fs, dir), want); err != nil {
		t.Fatal(err)
	}

	img := filepath.Join(t.TempDir(), "vda.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(busybox, "mke2fs", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("busybox mke2fs: %v\n%s", err, out)
	}
	e2fsck, _ := e2tool("e2fsck")
	if out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn of a busybox mke2fs image: %v\n%s", err, out)
	}
}
