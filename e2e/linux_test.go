package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
)

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// guestDir returns the example guest's directory, or skips.
func guestDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FTKVM_GUEST_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "guest", "out")
	}
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err != nil {
		if os.Getenv("FTKVM_REQUIRE_GUEST") == "1" {
			t.Fatalf("example guest missing in %s (FTKVM_REQUIRE_GUEST=1): %v", dir, err)
		}
		t.Skipf("example guest not built in %s (run 'make guest'): %v", dir, err)
	}
	kvmtest.Require(t)
	return dir
}

// buildFtvm compiles the ftvm binary, or returns $FTKVM_FTVM if set (a
// binary built beforehand: make test sets it for the emulated host, where
// compiling is slow).
func buildFtvm(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("FTKVM_FTVM"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "ftvm")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/ftvm")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building ftvm: %v\n%s", err, out)
	}
	return bin
}

// TestLinuxBootsRunsWorkloadAndPowersOff boots the example guest with
// `ftvm run` and checks the console against the workload's expected output
// (computed on the host by guest/build.sh with the same busybox).
func TestLinuxBootsRunsWorkloadAndPowersOff(t *testing.T) {
	dir := guestDir(t)
	bin := buildFtvm(t)
	expected, err := os.ReadFile(filepath.Join(dir, "expected-workload.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--guest-dir", dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	t.Logf("ftvm run took %v; stderr:\n%s", time.Since(start), stderr.String())
	if err != nil {
		t.Fatalf("ftvm run: %v\nconsole tail:\n%s", err, fttest.Tail(stdout.String(), 30))
	}
	console := stdout.String()
	for _, want := range []string{"FTKVM-GUEST: init started", "FTKVM-GUEST: powering off"} {
		if !strings.Contains(console, want) {
			t.Fatalf("console lacks %q; tail:\n%s", want, fttest.Tail(console, 30))
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(expected)), "\n") {
		if !strings.Contains(console, line+"\n") && !strings.Contains(console, line+"\r\n") {
			t.Errorf("console lacks expected workload line %q", line)
		}
	}
	if strings.Contains(console, "poweroff failed") || strings.Contains(console, "workload failed") {
		t.Errorf("guest reported a failure; tail:\n%s", fttest.Tail(console, 30))
	}
	if !strings.Contains(stderr.String(), "guest powered off") {
		t.Errorf("ftvm did not report a power-off: %s", stderr.String())
	}
}

// TestWrongKernelIsRefused checks that a file that is not a vmlinux gives
// a clear error and a non-zero exit, not a hang or a crash.
func TestWrongKernelIsRefused(t *testing.T) {
	kvmtest.Require(t)
	bin := buildFtvm(t)
	for name, content := range map[string][]byte{
		"garbage": []byte("definitely not a kernel"),
		"script":  []byte("#!/bin/sh\necho hi\n"),
	} {
		path := filepath.Join(t.TempDir(), name)
		os.WriteFile(path, content, 0o644)
		out, err := exec.Command(bin, "run", "--kernel", path, "--initrd", "").CombinedOutput()
		if err == nil {
			t.Errorf("%s: ftvm run succeeded:\n%s", name, out)
			continue
		}
		if !strings.Contains(string(out), "kernel image: not an ELF file") {
			t.Errorf("%s: unclear error:\n%s", name, out)
		}
	}
}
