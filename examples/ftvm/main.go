// Command ftvm runs a virtual machine under ftkvm.
//
//	ftvm run [flags]      boot the example Linux guest (or --kernel, or a bare --image)
//	ftvm primary/backup   the two sides of a fault-tolerant pair
//	ftvm certs DIR        the pair's CA and node certificates (mutual TLS)
//	ftvm demo             an FT pair on this machine, with a failover
//
// Run `ftvm run -h` for the flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: ftvm <command> [flags]

commands:
  run      boot a guest: the example Linux guest by default, or --kernel/--initrd/--cmdline,
           or a bare test guest with --image FILE or --bare NAME
  record   run a guest and log every nondeterministic input to -o FILE
  replay   replay a log on the same guest; stops at the first divergence
  inspect  print a log's header, event counts and bytes by kind
  certs    make a CA and certificates for an FT pair's mutual TLS in DIR: ftvm certs [--host NAME] DIR
  primary  run a guest as the primary of an FT pair: --listen ADDR --split-dir DIR [--tls-dir CERTS] [guest flags]
  backup   run the backup of an FT pair: --connect ADDR --split-dir DIR [--tls-dir CERTS] [the same guest flags]
           (both use mutual TLS 1.3 with the certificates in --tls-dir, default ./ftkvm-certs;
           --insecure runs them unauthenticated in plaintext)
  demo     run an FT pair on this machine, kill the primary partway, watch the backup take over

guest devices (run, record, replay, primary, backup): --disk IMAGE; --net tap:NAME (a tap
interface) or --net udp:LOCAL[,PEER] (a UDP socket, one Ethernet frame per datagram, for
where no tap can be made); both attach at the guest's first frame, so a backup does when it goes live

Run 'ftvm <command> -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var code int
	var err error
	switch os.Args[1] {
	case "run":
		code, err = cmdRun(ctx, os.Args[2:])
	case "record":
		code, err = cmdRecord(ctx, os.Args[2:])
	case "replay":
		code, err = cmdReplay(ctx, os.Args[2:])
	case "inspect":
		code, err = cmdInspect(os.Args[2:])
	case "primary":
		code, err = cmdPrimary(ctx, os.Args[2:])
	case "backup":
		code, err = cmdBackup(ctx, os.Args[2:])
	case "certs":
		code, err = cmdCerts(os.Args[2:])
	case "demo":
		code, err = cmdDemo(ctx, os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "ftvm: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "ftvm %s: %v\n", os.Args[1], err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "ftvm: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

type usageError struct{ error }
