// Command testbed runs a command inside a software-emulated x86 host with a
// standard KVM (QEMU TCG, AMD SVM with nested paging, Debian's kernel with
// kvm_amd), for machines without /dev/kvm. See package testbed.
//
//	testbed [flags] -- COMMAND [ARG...]   run COMMAND inside; exit with its status
//	testbed [flags] -c SCRIPT             run a bash script inside
//	testbed [-v] setup                    install the Debian packages, build the cached image
//
// The command sees this machine's files (read-only, writes go to a tmpfs
// overlay) and the directory -dir (default: the current one) read-write at
// the same path, as its working directory. Its output streams live. If the
// host itself fails (not set up, no /dev/kvm inside, crash) testbed prints
// why and exits 125; on a timeout it exits 124.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ftkvm/ftkvm/testbed"
)

const usage = `usage:
  testbed [flags] -- COMMAND [ARG...]   run COMMAND in an emulated KVM host, exit with its status
  testbed [flags] -c SCRIPT             run a bash script there
  testbed [-v] setup                    install the Debian packages and build the cached image (-v: say which)

flags:
`

// envFlags collects -e KEY[=VALUE]; a bare KEY takes this process's value.
type envFlags map[string]string

func (e envFlags) String() string { return "" }
func (e envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		v, ok = os.LookupEnv(k)
		if !ok {
			return nil // unset here: unset inside too
		}
	}
	if k == "" {
		return errors.New("empty variable name")
	}
	e[k] = v
	return nil
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("testbed", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usage)
		fs.PrintDefaults()
	}
	mem := fs.Int("mem", testbed.DefaultMemMB, "the emulated host's RAM in MB (holds the tmpfs overlay)")
	timeout := fs.Duration("timeout", testbed.DefaultTimeout, "wall-clock limit, boot included; QEMU is killed after it")
	wd, _ := os.Getwd()
	dir := fs.String("dir", wd, "directory shared read-write at the same path inside, and the working directory (empty: none, cwd /)")
	script := fs.String("c", "", "bash script to run instead of COMMAND")
	verbose := fs.Bool("v", false, "print the boot and total times to stderr (with setup: the image)")
	env := envFlags{}
	fs.Var(env, "e", "KEY[=VALUE]: set an environment variable inside (bare KEY: this process's value); repeatable")
	var qemuArgs stringList
	fs.Var(&qemuArgs, "qemu", "an extra QEMU argument; repeatable")
	linkListen := fs.Int("link-listen", 0, "listen on 127.0.0.1:PORT for a private link to another host (eth0 inside)")
	linkConnect := fs.Int("link-connect", 0, "connect to 127.0.0.1:PORT, another host's -link-listen")
	linkAddr := fs.String("link-addr", "", "this host's IPv6 link-local address on the link (e.g. fe80::a)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	args := fs.Args()

	if len(args) == 1 && args[0] == "setup" && *script == "" {
		if err := testbed.Setup(os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if *verbose {
			d, err := testbed.Describe()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintln(os.Stderr, "testbed: ready:", d)
		}
		return 0
	}
	switch {
	case *script != "" && len(args) > 0:
		fmt.Fprintln(os.Stderr, "testbed: -c and COMMAND are exclusive")
		return 2
	case *script == "" && len(args) == 0:
		fs.Usage()
		return 2
	case *script == "":
		*script = "exec " + testbed.ShellJoin(args)
	}

	o := testbed.Options{
		Script:  *script,
		MemMB:   *mem,
		Timeout: *timeout,
		Env:     env,
		Dir:     *dir,
		Console: os.Stdout,

		ExtraQEMUArgs: qemuArgs,
	}
	switch {
	case *linkListen != 0 && *linkConnect != 0:
		fmt.Fprintln(os.Stderr, "testbed: -link-listen and -link-connect are exclusive")
		return 2
	case *linkListen != 0:
		o.Link = &testbed.Link{Port: *linkListen, Listen: true, Addr: *linkAddr}
	case *linkConnect != 0:
		o.Link = &testbed.Link{Port: *linkConnect, Addr: *linkAddr}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := testbed.Run(ctx, o)
	if *verbose {
		fmt.Fprintf(os.Stderr, "testbed: boot %v, total %v\n", res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, testbed.ErrTimeout) {
			return 124
		}
		return 125
	}
	return res.ExitStatus
}
