package tscpatch

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// toolchain runs a host tool in dir, failing the test with its output.
func toolchain(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed: the synthetic-ELF tests assemble real objects", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// assemble assembles src with gcc, links it with the linker script and
// returns the ELF file; ldArgs are extra linker arguments (e.g. "-s").
func assemble(t *testing.T, src, script string, ldArgs ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t.S"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "t.ld"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	toolchain(t, dir, "gcc", "-c", "-o", "t.o", "t.S")
	toolchain(t, dir, "ld", append([]string{"-static", "-nostdlib", "-z", "noexecstack", "-T", "t.ld", "-o", "t.elf", "t.o"}, ldArgs...)...)
	b, err := os.ReadFile(filepath.Join(dir, "t.elf"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// symbols returns the ELF's symbol addresses by name.
func symbols(t *testing.T, image []byte) map[string]uint64 {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]uint64{}
	for _, s := range syms {
		m[s.Name] = s.Value
	}
	return m
}

// flatText converts an ELF image to a flat binary with objcopy, as the bare
// guests are built.
func flatText(t *testing.T, image []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.elf"), image, 0o644); err != nil {
		t.Fatal(err)
	}
	toolchain(t, dir, "objcopy", "-O", "binary", "in.elf", "out.bin")
	b, err := os.ReadFile(filepath.Join(dir, "out.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
