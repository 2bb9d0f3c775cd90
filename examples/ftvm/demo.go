package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/ft/pairtls"
)

// cmdDemo runs an FT pair on this machine: a backup and a primary as two
// processes on loopback with a temporary directory as their shared
// storage, boots the guest under FT, SIGKILLs the primary partway, and
// shows the backup finishing the guest's work.
func cmdDemo(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	killAt := fs.String("kill-at", "FTKVM-GUEST: step 3/10", "SIGKILL the primary once its released console output contains this")
	killAfter := fs.Duration("kill-after", 0, "SIGKILL the primary after this long instead (0: use --kill-at)")
	timeout := fs.Duration("timeout", 20*time.Minute, "give up after this long")
	chatter := fs.Bool("chatter", false, "run the bare 'chatter' test guest (numbered lines; package ft/ftguest) instead of Linux, and kill the primary after --kill-after (default 1.5s)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ftvm demo [demo flags] [-- guest and pair flags for both sides]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK, nil
		}
		return exitUsage, usageError{err}
	}
	extra := fs.Args()
	if len(extra) > 0 && extra[0] == "--" {
		extra = extra[1:]
	}
	if err := checkKVM(); err != nil {
		return exitNoKVM, err
	}
	if *chatter {
		cdir, err := os.MkdirTemp("", "ftvm-demo-guest-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(cdir)
		img, err := ftguest.Build(cdir, ftguest.Spec{Lines: 1500, Spin: 1000})
		if err != nil {
			return 1, err
		}
		extra = append(extra, "--image", img)
		if *killAfter == 0 {
			*killAfter = 1500 * time.Millisecond
		}
	}
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	dir, err := os.MkdirTemp("", "ftvm-demo-split-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1, err
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	say := func(format string, a ...any) {
		fmt.Printf("\n=== demo %s: %s\n\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}
	say("FT pair on loopback %s, shared storage for the test-and-set: %s", addr, dir)
	// The Linux replay is several times slower than the guest: hold the
	// primary to at most 1500 log entries ahead of the backup, so that a
	// failover replays little (override with -- --window-entries N).
	common := []string{"--split-dir", dir, "--status-every", "3s", "--window-entries", "1500"}
	if !hasFlag(extra, "insecure") && !hasFlag(extra, "tls-dir") {
		// The pair's own CA and certificates, as `ftvm certs` makes them.
		cdir, err := os.MkdirTemp("", "ftvm-demo-certs-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(cdir)
		certs := filepath.Join(cdir, "certs")
		if _, err := pairtls.Generate(certs, pairtls.Options{}); err != nil {
			return 1, err
		}
		say("log channel: mutual TLS 1.3 with a CA and certificates made for this demo in %s (what 'ftvm certs %s' makes): the primary accepts only the backup's certificate, the backup only the primary's", certs, certs)
		common = append(common, "--tls-dir", certs)
	}
	common = append(common, extra...)

	var outMu sync.Mutex
	var primaryOut, backupOut bytes.Buffer
	start := func(name string, args []string, out *bytes.Buffer, line func(string)) (*exec.Cmd, chan struct{}, error) {
		cmd := exec.CommandContext(ctx, self, args...)
		so, _ := cmd.StdoutPipe()
		se, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		pump := func(r io.Reader, prefix string, keep bool) {
			defer wg.Done()
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				outMu.Lock()
				fmt.Printf("%-18s %s\n", prefix, sc.Text())
				if keep {
					out.WriteString(sc.Text() + "\n")
				}
				outMu.Unlock()
				if keep && line != nil {
					line(sc.Text())
				}
			}
		}
		go pump(so, "["+name+" console]", true)
		go pump(se, "["+name+"]", false)
		go func() { wg.Wait(); close(done) }()
		return cmd, done, nil
	}

	backup, backupDone, err := start("backup", append([]string{"backup", "--connect", addr}, common...), &backupOut, nil)
	if err != nil {
		return 1, err
	}
	var killOnce sync.Once
	var primary *exec.Cmd
	kill := func(why string) {
		select {
		case <-backupDone:
			say("%s, but the backup has already stopped (see its lines above): not killing the primary, which runs on unprotected", why)
			return
		default:
		}
		killOnce.Do(func() {
			say("%s: SIGKILL the primary (pid %d). The backup must notice, win the test-and-set and go live.", why, primary.Process.Pid)
			primary.Process.Signal(syscall.SIGKILL)
		})
	}
	var onLine func(string)
	if *killAfter == 0 && *killAt != "" {
		onLine = func(s string) {
			if strings.Contains(s, *killAt) {
				go kill(fmt.Sprintf("the primary released %q", s))
			}
		}
	}
	primary, primaryDone, err := start("primary", append([]string{"primary", "--listen", addr}, common...), &primaryOut, onLine)
	if err != nil {
		backup.Process.Kill()
		return 1, err
	}
	if *killAfter > 0 {
		go func() {
			select {
			case <-time.After(*killAfter):
				kill(fmt.Sprintf("%v elapsed", *killAfter))
			case <-primaryDone:
			}
		}()
	}
	<-primaryDone
	perr := primary.Wait()
	say("primary ended: %v", perr)
	<-backupDone
	berr := backup.Wait()
	say("backup ended: %v", berr)

	fmt.Printf("What the outside world saw on the console: %d bytes from the primary, then %d bytes from the backup after it went live.\n",
		primaryOut.Len(), backupOut.Len())
	if backupOut.Len() > 0 {
		fmt.Printf("The last lines, from the backup:\n")
		lines := strings.Split(strings.TrimRight(backupOut.String(), "\n"), "\n")
		for _, l := range lines[max(0, len(lines)-4):] {
			fmt.Printf("    %s\n", l)
		}
	}
	if berr != nil {
		return 1, fmt.Errorf("the backup failed: %v", berr)
	}
	return 0, nil
}

// hasFlag reports whether args set the flag name (-name or --name, with or
// without =value).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}
