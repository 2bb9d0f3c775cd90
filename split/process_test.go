package split_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/split"
)

// Environment of a racing child process (the test binary re-executed).
const (
	childDirEnv  = "SPLIT_TEST_CHILD_DIR"
	childNodeEnv = "SPLIT_TEST_CHILD_NODE"
	childGenEnv  = "SPLIT_TEST_CHILD_GEN"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(raceChild(dir, os.Getenv(childNodeEnv), os.Getenv(childGenEnv)))
	}
	if eps := os.Getenv(etcdChildEnv); eps != "" {
		os.Exit(etcdRaceChild(eps, os.Getenv(etcdChildClusterEnv), os.Getenv(childNodeEnv)))
	}
	code := m.Run()
	stopSharedEtcd()
	os.Exit(code)
}

// raceChild is a racing node: it says "ready", waits for a line on stdin
// (the start gun, fired at all children at once), claims, and prints
// "won", "lost <winner>" or "error <message>".
func raceChild(dir, node, genText string) int {
	gen, err := strconv.ParseUint(genText, 10, 64)
	if err != nil {
		fmt.Println("error bad generation:", err)
		return 1
	}
	a, err := split.NewFileArbiter(split.FileConfig{Dir: dir, Pair: pair, Node: node, Generation: gen, Timeout: 10 * time.Second})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Println("error no start signal:", err)
		return 1
	}
	err = a.TestAndSet(context.Background())
	var lost *split.LostError
	switch {
	case err == nil:
		fmt.Println("won")
	case errors.As(err, &lost):
		fmt.Println("lost", lost.Winner.Owner)
	default:
		fmt.Println("error", err)
	}
	return 0
}

// Separate processes, as on two hosts, race for each generation: exactly
// one wins and all the others name it.
func TestProcessesRaceOneWinner(t *testing.T) {
	const procs, rounds = 16, 6
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for gen := uint64(1); gen <= rounds; gen++ {
		type child struct {
			cmd   *exec.Cmd
			stdin io.WriteCloser
			out   *bufio.Reader
		}
		children := make([]child, procs)
		for i := range children {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(),
				childDirEnv+"="+dir,
				childNodeEnv+"="+fmt.Sprintf("proc%02d", i),
				childGenEnv+"="+strconv.FormatUint(gen, 10))
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			children[i] = child{cmd, stdin, bufio.NewReader(stdout)}
		}
		for i, c := range children {
			if line, err := c.out.ReadString('\n'); line != "ready\n" {
				t.Fatalf("generation %d: proc%02d: %q, %v; want ready", gen, i, line, err)
			}
		}
		for _, c := range children { // the start gun
			c.stdin.Write([]byte("go\n"))
		}
		results := make([]string, procs)
		for i, c := range children {
			line, _ := c.out.ReadString('\n')
			results[i] = strings.TrimSuffix(line, "\n")
			if err := c.cmd.Wait(); err != nil {
				t.Fatalf("generation %d: proc%02d: %v (%q)", gen, i, err, results[i])
			}
		}

		winner := oneWinner(t, gen, results)
		rec, err := newArbiter(t, dir, "observer", gen).Owner(context.Background())
		if err != nil || rec.Owner != winner {
			t.Fatalf("generation %d: record %+v, %v; want %s", gen, rec, err, winner)
		}
		t.Logf("generation %d: %s won against %d processes", gen, winner, procs-1)
	}
	if got := dirNames(t, dir); len(got) != rounds {
		t.Fatalf("directory holds %q, want %d claims and no temporary files", got, rounds)
	}
}

// oneWinner checks one generation's answers from the racing processes
// ("won", or "lost " and the winner's name) and returns the winner's name:
// exactly one won, and every other one names it.
func oneWinner(t *testing.T, gen uint64, results []string) string {
	t.Helper()
	winner := ""
	for i, r := range results {
		if r == "won" {
			if winner != "" {
				t.Fatalf("generation %d: both %s and proc%02d won: %q", gen, winner, i, results)
			}
			winner = fmt.Sprintf("proc%02d", i)
		}
	}
	if winner == "" {
		t.Fatalf("generation %d: nobody won: %q", gen, results)
	}
	for i, r := range results {
		if r != "won" && r != "lost "+winner {
			t.Fatalf("generation %d: proc%02d said %q, want \"lost %s\"", gen, i, r, winner)
		}
	}
	return winner
}
