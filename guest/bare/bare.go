// Package bare holds ftkvm's bare test guests: small x86-64 programs, kept
// as assembly source, that each exercise one part of the VMM. Build
// assembles one with the machine's gcc and ld into a flat image for
// vmm.LoadBare (loaded and entered at 0x100000 in 64-bit mode).
package bare

import (
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

//go:embed *.S *.inc
var sources embed.FS

// Names lists the guests that can be built.
func Names() []string {
	entries, _ := sources.ReadDir(".")
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".S"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

var (
	mu    sync.Mutex
	built = map[string]*Image{}
)

// Image is an assembled guest.
type Image struct {
	Name    string
	Binary  []byte            // flat image, loaded at 0x100000
	Symbols map[string]uint64 // global symbols, at their load addresses
}

// Build assembles the named guest. Results are cached for the process.
func Build(name string) (*Image, error) {
	mu.Lock()
	defer mu.Unlock()
	if img, ok := built[name]; ok {
		return img, nil
	}
	if _, err := sources.ReadFile(name + ".S"); err != nil {
		return nil, fmt.Errorf("no bare guest %q (have %s)", name, strings.Join(Names(), ", "))
	}
	dir, err := os.MkdirTemp("", "ftkvm-bare-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	entries, _ := sources.ReadDir(".")
	for _, e := range entries {
		b, _ := sources.ReadFile(e.Name())
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return nil, err
		}
	}
	obj := filepath.Join(dir, name+".o")
	elfOut := filepath.Join(dir, name+".elf")
	bin := filepath.Join(dir, name+".bin")
	steps := [][]string{
		{"gcc", "-c", "-x", "assembler-with-cpp", "-o", obj, filepath.Join(dir, name+".S")},
		{"ld", "-static", "-nostdlib", "-Ttext=0x100000", "-e", "_start", "-o", elfOut, obj},
		{"objcopy", "-O", "binary", "-j", ".text", elfOut, bin},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building bare guest %s: %s: %v\n%s", name, s[0], err, out)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	syms, err := symbols(elfOut)
	if err != nil {
		return nil, err
	}
	img := &Image{Name: name, Binary: b, Symbols: syms}
	built[name] = img
	return img, nil
}
