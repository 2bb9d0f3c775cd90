// Command ftvm runs a virtual machine under ftkvm.
//
//	ftvm run [flags]      boot the example Linux guest (or --kernel, or a bare --image)
//	ftvm record/replay    log a run's nondeterministic inputs; replay the log
//	ftvm primary/backup   the two sides of a fault-tolerant pair
//	ftvm certs DIR        the pair's CA and node certificates (mutual TLS)
//	ftvm demo             an FT pair on this machine, with a failover
//
// Run `ftvm help` for the commands and exit statuses (docs/cli.md has the
// whole contract), `ftvm COMMAND -h` for a command's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: ftvm <command> [flags] [args]

commands:
  run      boot a guest: the example Linux guest by default, or --kernel/--initrd/--cmdline,
           or a bare test guest with --image FILE or --bare NAME
  record   run a guest and log every nondeterministic input to -o FILE
  replay   replay a log on the same guest: ftvm replay FILE [guest flags]; stops at the first divergence
  inspect  print a log's header, event counts and bytes by kind: ftvm inspect FILE [--events N] [--json]
  certs    make a CA and certificates for an FT pair's mutual TLS in DIR: ftvm certs [--host NAME] DIR
  primary  run a guest as the primary of an FT pair: --listen ADDR --split-dir DIR [--tls-dir CERTS] [guest flags]
  backup   run the backup of an FT pair: --connect ADDR --split-dir DIR [--tls-dir CERTS] [the same guest flags]
           (both use mutual TLS 1.3 with the certificates in --tls-dir, default ./ftkvm-certs;
           --insecure runs them unauthenticated in plaintext)
  status   ask a primary or backup for its state: ftvm status HOST:PORT [--json] (its --metrics-addr)
  demo     run an FT pair on this machine, kill the primary partway, watch the backup take over
  version  print ftvm's version (also --version)

guest devices (run, record, replay, primary, backup): --disk IMAGE; --net tap:NAME (a tap
interface) or --net udp:LOCAL[,PEER] (a UDP socket, one Ethernet frame per datagram, for
where no tap can be made); both attach at the guest's first frame, so a backup does when it goes live

Flags and arguments may come in any order; '--' ends the flags.
Progress and summary lines go to stderr (-q: none), the guest's console to stdout.

`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage+exitCodes+"\nRun 'ftvm <command> -h' for a command's flags.\n")
		os.Exit(exitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := dispatch(ctx, os.Args[1], os.Args[2:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(exitOK) // -h: the flags' help is printed
	}
	if err != nil {
		if _, ok := err.(usageError); ok {
			fmt.Fprintf(os.Stderr, "ftvm %s: %v (ftvm %s -h: the flags)\n", os.Args[1], err, os.Args[1])
		} else {
			fmt.Fprintf(os.Stderr, "ftvm: %v\n", err)
		}
		code = exitCode(err)
	}
	os.Exit(code)
}

// dispatch runs one command; an error decides the exit status (exitCode).
func dispatch(ctx context.Context, cmd string, args []string) (int, error) {
	switch cmd {
	case "run":
		return cmdRun(ctx, args)
	case "record":
		return cmdRecord(ctx, args)
	case "replay":
		return cmdReplay(ctx, args)
	case "inspect":
		return cmdInspect(args)
	case "primary":
		return cmdPrimary(ctx, args)
	case "backup":
		return cmdBackup(ctx, args)
	case "certs":
		return cmdCerts(args)
	case "demo":
		return cmdDemo(ctx, args)
	case "status":
		return cmdStatus(ctx, args)
	case "version", "--version", "-version":
		fmt.Println(version())
		return exitOK, nil
	case "-h", "--help", "help":
		fmt.Print(usage + exitCodes + "\nRun 'ftvm <command> -h' for a command's flags.\n")
		return exitOK, nil
	}
	return exitUsage, usageError{fmt.Errorf("unknown command %q (ftvm help: the commands)", cmd)}
}
