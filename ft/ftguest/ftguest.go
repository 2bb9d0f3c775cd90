// Package ftguest builds "chatter", the bare test guest of the FT tests and
// benchmark: it prints numbered lines for a while, reading the TSC before
// each (a logged nondeterministic input), optionally under a 1 kHz PIT
// interrupt (asynchronous deliveries, located by landmarks on replay).
// Its console output is the same on every run, so a failed-over pair's
// output can be compared with an undisturbed run's.
package ftguest

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

//go:embed chatter.S
var source []byte

// Spec says what chatter does.
type Spec struct {
	Lines int  // numbered lines to print
	Spin  int  // busy-loop iterations before each line (~1-2 M/s when emulated)
	Ticks bool // run the PIT at 1 kHz with an interrupt handler
	// Idle (with Ticks): halt until Spin timer ticks (ms) have passed
	// before each line instead of spinning.
	Idle bool
}

// Build assembles chatter with gcc, ld and objcopy and writes the flat image
// (for ftvm --image) into dir, returning its path.
func Build(dir string, s Spec) (string, error) {
	if s.Lines <= 0 || s.Spin <= 0 {
		return "", fmt.Errorf("chatter needs Lines and Spin > 0")
	}
	if s.Idle && !s.Ticks {
		return "", fmt.Errorf("chatter: Idle needs Ticks")
	}
	name := fmt.Sprintf("chatter-%d-%d-%v-%v", s.Lines, s.Spin, s.Ticks, s.Idle)
	src := filepath.Join(dir, name+".S")
	obj, elf, bin := filepath.Join(dir, name+".o"), filepath.Join(dir, name+".elf"), filepath.Join(dir, name+".bin")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", err
	}
	cc := []string{"gcc", "-c", "-x", "assembler-with-cpp", fmt.Sprintf("-DLINES=%d", s.Lines), fmt.Sprintf("-DSPIN=%d", s.Spin)}
	if s.Ticks {
		cc = append(cc, "-DTICKS")
	}
	if s.Idle {
		cc = append(cc, "-DIDLE")
	}
	steps := [][]string{
		append(cc, "-o", obj, src),
		{"ld", "-static", "-nostdlib", "-Ttext=0x100000", "-e", "_start", "-o", elf, obj},
		{"objcopy", "-O", "binary", "-j", ".text", elf, bin},
	}
	for _, st := range steps {
		if out, err := exec.Command(st[0], st[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("building chatter: %s: %v\n%s", st[0], err, out)
		}
	}
	return bin, nil
}

// Expected is chatter's console output for s.
func Expected(s Spec) string {
	var b []byte
	for i := 1; i <= s.Lines; i++ {
		b = fmt.Appendf(b, "chatter line %d\n", i)
	}
	return string(b)
}
