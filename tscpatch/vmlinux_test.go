package tscpatch

import (
	"bytes"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// guestVmlinux returns the example guest's kernel: $FTKVM_GUEST_DIR/vmlinux,
// by default guest/out/vmlinux (built by guest/build.sh). The test skips if
// it is missing, or fails if FTKVM_REQUIRE_GUEST=1.
func guestVmlinux(t *testing.T) []byte {
	t.Helper()
	dir := os.Getenv("FTKVM_GUEST_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "guest", "out")
	}
	path := filepath.Join(dir, "vmlinux")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		msg := path + " not found: build the example guest with guest/build.sh (or set FTKVM_GUEST_DIR)"
		if os.Getenv("FTKVM_REQUIRE_GUEST") == "1" {
			t.Fatal(msg + "; FTKVM_REQUIRE_GUEST=1")
		}
		t.Skip(msg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGuestKernel(t *testing.T) {
	image := guestVmlinux(t)
	sites, err := Scan(image)
	if err != nil {
		t.Fatal(err)
	}

	perSection := map[string][]string{}
	for _, s := range sites {
		name := s.Kind.String() + " " + s.Symbol
		if !s.Certain {
			name += " (uncertain)"
		}
		perSection[s.Section] = append(perSection[s.Section], name)
		code := image[s.FileOffset : s.FileOffset+int64(s.Len)]
		inst, err := x86asm.Decode(code, 64)
		if k, ok := siteKind(code, inst); err != nil || !ok || k != s.Kind {
			t.Errorf("%v: bytes % x decode as %v, %v", s, code, inst, err)
		}
		if s.Section == altReplacementSection && len(s.AltPAddrs) == 0 {
			t.Errorf("%v: no destination from .altinstructions", s)
		}
	}
	secs := make([]string, 0, len(perSection))
	for sec := range perSection {
		secs = append(secs, sec)
	}
	sort.Strings(secs)
	t.Logf("%d sites", len(sites))
	for _, sec := range secs {
		t.Logf("%s: %d: %s", sec, len(perSection[sec]), strings.Join(perSection[sec], ", "))
	}
	for _, sec := range []string{".text", altReplacementSection} {
		if len(perSection[sec]) == 0 {
			t.Errorf("no sites in %s", sec)
		}
	}
	if !hasSymbol(sites, "random_get_entropy") {
		t.Error("no site in random_get_entropy (it runs rdtsc even with the TSC hidden)")
	}
	t.Logf("%d opcode byte patterns in executable sections are not instructions", strayPatterns(t, image)-len(sites))

	patched, err := Patch(image, sites, DefaultRDTSCPort, DefaultRDTSCPPort)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		code := patched[s.FileOffset : s.FileOffset+int64(s.Len)]
		inst, err := x86asm.Decode(code, 64)
		if err != nil || inst.Op != x86asm.OUT || inst.Len != 2 {
			t.Errorf("%v: patched bytes % x decode as %v, %v", s, code, inst, err)
		}
	}
	if again, err := Scan(patched); err != nil || len(again) != 0 {
		t.Errorf("rescanning the patched kernel: %d sites, %v", len(again), err)
	}
	tab, err := NewSiteTable(sites, DefaultRDTSCPort, DefaultRDTSCPPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("site table: %d (address, port) entries", tab.Len())
}

func hasSymbol(sites []Site, name string) bool {
	for _, s := range sites {
		if s.Symbol == name {
			return true
		}
	}
	return false
}

// strayPatterns counts raw rdtsc/rdtscp byte patterns in executable sections,
// instruction boundaries or not.
func strayPatterns(t *testing.T, image []byte) int {
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sec := range f.Sections {
		if sec.Flags&elf.SHF_EXECINSTR == 0 || sec.Type != elf.SHT_PROGBITS {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			t.Fatal(err)
		}
		n += bytes.Count(data, RDTSC.opcode()) + bytes.Count(data, RDTSCP.opcode())
	}
	return n
}
