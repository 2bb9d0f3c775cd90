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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ftkvm/ftkvm/split"
)

// Environment of an etcd racing child process (the test binary
// re-executed); childNodeEnv names it.
const (
	etcdChildEnv        = "SPLIT_TEST_ETCD_CHILD_ENDPOINTS"
	etcdChildClusterEnv = "SPLIT_TEST_ETCD_CHILD_CLUSTER"
)

// etcdRaceChild is a racing node with its own etcd client, for many
// generations: it says "ready", then for each generation number read from
// stdin claims it (retrying ErrUnreachable, as ft does) and prints "won",
// "lost <winner>" or "error <message>". It ends at EOF.
func etcdRaceChild(endpoints, clusterText, node string) int {
	cluster, err := strconv.ParseUint(clusterText, 10, 64)
	if err != nil {
		fmt.Println("error bad cluster ID:", err)
		return 1
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer cli.Close()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		gen, err := strconv.ParseUint(in.Text(), 10, 64)
		if err != nil {
			fmt.Println("error bad generation:", err)
			return 1
		}
		a, err := split.NewEtcdArbiter(split.EtcdConfig{Client: cli, ClusterID: cluster, Pair: "procs", Node: node, Generation: gen, Timeout: 5 * time.Second})
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			err = a.TestAndSet(context.Background())
			if !errors.Is(err, split.ErrUnreachable) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		a.Close()
		var lost *split.LostError
		switch {
		case err == nil:
			fmt.Println("won")
		case errors.As(err, &lost):
			fmt.Println("lost", lost.Winner.Owner)
		default:
			fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
	return 0
}

// Separate processes, each with its own etcd client, race for each
// generation: exactly one wins and the others name it. make test runs 8
// processes x 10 generations (the goroutine race covers the 50 x
// 100 there); FTKVM_SOAK=1 runs 50 processes x 100 generations, with the
// leader killed and leadership moved on the way.
func TestEtcdProcessesRaceOneWinner(t *testing.T) {
	t.Parallel() // mostly waits: for members to stop, for timeouts
	if testing.Short() {
		t.Skip("-short: the goroutine race stands in for it")
	}
	procs, rounds := 8, 10
	soak := os.Getenv("FTKVM_SOAK") == "1"
	if soak {
		procs, rounds = 50, 100
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := startEtcdCluster(t, 3, "ftkvm-split-procs", "")
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	children := make([]child, procs)
	for i := range children {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(),
			etcdChildEnv+"="+strings.Join(c.endpoints(), ","),
			etcdChildClusterEnv+"="+strconv.FormatUint(c.clusterID(), 10),
			childNodeEnv+"="+fmt.Sprintf("proc%02d", i))
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
		t.Cleanup(func() { stdin.Close(); cmd.Wait() })
		children[i] = child{cmd, stdin, bufio.NewReader(stdout)}
	}
	for i, ch := range children {
		if line, err := ch.out.ReadString('\n'); line != "ready\n" {
			t.Fatalf("proc%02d: %q, %v; want ready", i, line, err)
		}
	}
	killed := -1
	start := time.Now()
	for gen := 1; gen <= rounds; gen++ {
		for _, ch := range children { // the start gun
			fmt.Fprintf(ch.stdin, "%d\n", gen)
		}
		disrupted := make(chan struct{})
		go func() {
			defer close(disrupted)
			switch {
			case soak && gen == rounds/3:
				killed = c.waitLeader()
				c.kill(killed)
				t.Logf("generation %d: killed the leader, m%d", gen, killed)
			case soak && gen == 2*rounds/3:
				l := c.waitLeader()
				c.moveLeader(3 - killed - l)
				t.Logf("generation %d: moved leadership from m%d to m%d", gen, l, 3-killed-l)
			}
		}()
		results := make([]string, procs)
		for i, ch := range children {
			line, err := ch.out.ReadString('\n')
			if err != nil {
				t.Fatalf("generation %d: proc%02d: %v", gen, i, err)
			}
			results[i] = strings.TrimSuffix(line, "\n")
		}
		<-disrupted
		oneWinner(t, uint64(gen), results)
	}
	t.Logf("%d processes x %d generations: one winner each, in %v", procs, rounds, time.Since(start).Round(time.Millisecond))
}
