// Package fttest holds what the FT pair's end-to-end tests (e2e, on one
// host, and e2e/twohost) and the two-host demo and benchmark share: the
// ftvm binary and the chatter guests they run, the check of what the
// outside world saw across a failover, and small helpers for reading
// ftvm's logs.
package fttest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ftkvm/ftkvm/ft/ftguest"
)

// Env is the ftvm binary and the two chatter guests the FT tests run.
type Env struct {
	Bin    string       // ftvm
	Chat   string       // chatter, plain
	Ticks  string       // chatter under a 1 kHz PIT
	ChatS  ftguest.Spec // what Chat prints (ftguest.Expected)
	TicksS ftguest.Spec
}

// Setup builds the guests into a new temporary directory and ftvm from
// the module at repoRoot, unless $FTKVM_FTVM names a binary built before.
func Setup(repoRoot string) (Env, error) {
	dir, err := os.MkdirTemp("", "ftkvm-ft-e2e-")
	if err != nil {
		return Env{}, err
	}
	e := Env{
		Bin:    os.Getenv("FTKVM_FTVM"),
		ChatS:  ftguest.Spec{Lines: 1500, Spin: 1000},
		TicksS: ftguest.Spec{Lines: 400, Spin: 1000, Ticks: true},
	}
	if e.Bin == "" {
		e.Bin = filepath.Join(dir, "ftvm")
		cmd := exec.Command("go", "build", "-o", e.Bin, "./examples/ftvm")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			return Env{}, fmt.Errorf("building ftvm: %v\n%s", err, out)
		}
	}
	if e.Chat, err = ftguest.Build(dir, e.ChatS); err != nil {
		return Env{}, err
	}
	if e.Ticks, err = ftguest.Build(dir, e.TicksS); err != nil {
		return Env{}, err
	}
	return e, nil
}

// ErrOutput is wrapped by every CheckFailoverOutput failure.
var ErrOutput = errors.New("the outside world's output is wrong")

// CheckFailoverOutput requires the outside world's view — the primary's
// released output followed by the backup's — to be the reference with at
// most an overlap (duplicated output re-sent by the backup), nothing lost
// and nothing else added.
func CheckFailoverOutput(ref, pOut, bOut string) error {
	if !strings.HasPrefix(ref, pOut) {
		return fmt.Errorf("%w: the primary released output that is not a prefix of the reference: %d bytes, tail %q", ErrOutput, len(pOut), Tail(pOut, 3))
	}
	k := len(ref) - len(bOut)
	if k < 0 || ref[k:] != bOut {
		return fmt.Errorf("%w: the backup's output (%d bytes, head %q) is not a suffix of the reference (%d bytes)", ErrOutput, len(bOut), bOut[:min(len(bOut), 80)], len(ref))
	}
	if k > len(pOut) {
		return fmt.Errorf("%w: output lost: the primary released %d bytes, the backup re-sent from offset %d", ErrOutput, len(pOut), k)
	}
	return nil
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Line is the first line of s that contains sub, trimmed ("" if none).
func Line(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// After is what follows the first sub in s ("" if none).
func After(s, sub string) string {
	if i := strings.Index(s, sub); i >= 0 {
		return s[i+len(sub):]
	}
	return ""
}

// Junction joins what the outside world saw of a failover: the primary's
// released output pOut and the backup's bOut, at the offset the backup's
// log bLog says it re-sent from ("re-sending N console bytes from offset
// M"). live reports whether the backup went live; if it did not, out is
// pOut. The re-sent part must repeat the end of pOut exactly: otherwise
// output was lost or garbled, and the error wraps ErrOutput.
func Junction(pOut, bOut, bLog string) (out string, from int, live bool, err error) {
	var n int
	if _, err := fmt.Sscanf(After(bLog, "re-sending "), "%d console bytes from offset %d", &n, &from); err != nil {
		return pOut, 0, false, nil
	}
	if from < 0 || from > len(pOut) || !strings.HasPrefix(bOut, pOut[from:]) {
		return "", from, true, fmt.Errorf("%w: output lost or garbled at the failover: the primary released %d bytes, the backup re-sent from offset %d", ErrOutput, len(pOut), from)
	}
	return pOut[:from] + bOut, from, true, nil
}

// EnvSoak=1 runs every kill-point sweep at its full size (`make soak`);
// without it `make test` samples fewer points, different ones each run
// (the seed is printed, so a failure can be repeated).
const EnvSoak = "FTKVM_SOAK"

// Points is how many kill points a sweep runs: $env if set (0 skips the
// test), else soak under FTKVM_SOAK=1, else quick. It logs the choice.
func Points(t interface {
	Helper()
	Logf(string, ...any)
	Skipf(string, ...any)
}, env string, quick, soak int) int {
	t.Helper()
	n, why := PointsFor(os.Getenv, env, quick, soak)
	if n == 0 {
		t.Skipf("%s=0", env)
	}
	t.Logf("%d kill points (%s)", n, why)
	return n
}

// PointsFor is Points' choice as a pure function of the environment.
func PointsFor(getenv func(string) string, env string, quick, soak int) (int, string) {
	if v := getenv(env); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil && n >= 0 {
			return n, env + "=" + v
		}
	}
	if getenv(EnvSoak) == "1" {
		return soak, EnvSoak + "=1: the full sweep"
	}
	return quick, "sampled; " + EnvSoak + "=1 or make soak runs " + fmt.Sprint(soak)
}
