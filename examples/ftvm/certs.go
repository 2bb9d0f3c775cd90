package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ftkvm/ftkvm/ft/pairtls"
)

// hostList is a repeatable, comma-separable --host flag.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*h = append(*h, s)
		}
	}
	return nil
}

// cmdCerts makes the pair's CA and node certificates (package
// ft/pairtls) in a directory and says how to use them.
func cmdCerts(args []string) (int, error) {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	var hosts hostList
	fs.Var(&hosts, "host", "a DNS name or IP address the node certificates also carry (repeatable or comma-separated; default "+strings.Join(pairtls.DefaultHosts, ", ")+"); peers check the fixed node names "+pairtls.PrimaryName+" and "+pairtls.BackupName+", not these")
	force := fs.Bool("force", false, "replace existing certificate files (both nodes then need the new ones)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ftvm certs [--host NAME]... [--force] DIR\n\nMakes a CA and certificates for the primary and the backup of an FT pair in DIR.\n\n")
		fs.PrintDefaults()
	}
	dir, err := oneArg(fs, args, "directory")
	if err != nil {
		return exitUsage, err
	}
	files, err := pairtls.Generate(dir, pairtls.Options{Hosts: hosts, Force: *force})
	if err != nil {
		return 1, err
	}
	shown := hosts
	if len(shown) == 0 {
		shown = pairtls.DefaultHosts
	}
	what := map[string]string{
		pairtls.CAFile:          "the pair's CA certificate (both hosts need it)",
		pairtls.PrimaryCertFile: "the primary's certificate, name " + pairtls.PrimaryName + " (also " + strings.Join(shown, ", ") + ")",
		pairtls.PrimaryKeyFile:  "the primary's private key (mode 0600)",
		pairtls.BackupCertFile:  "the backup's certificate, name " + pairtls.BackupName + " (also " + strings.Join(shown, ", ") + ")",
		pairtls.BackupKeyFile:   "the backup's private key (mode 0600)",
	}
	fmt.Printf("ftvm certs: made a CA and certificates for an FT pair (ECDSA P-256, valid %d days):\n", int(pairtls.DefaultValidity.Hours()/24))
	for _, f := range files {
		fmt.Printf("  %-32s %s\n", f, what[filepath.Base(f)])
	}
	fmt.Printf(`The CA's private key was not kept: no other certificate can be issued under
this CA (run again with --force to replace the whole set).

Use: the primary's host needs %[2]s, %[3]s and %[4]s, the backup's host
%[2]s, %[5]s and %[6]s, in a directory given to --tls-dir (default ./%[7]s):
  ftvm backup  --tls-dir %[1]s --connect PRIMARY-HOST:7700 --split-dir /shared [guest flags]
  ftvm primary --tls-dir %[1]s --listen :7700 --split-dir /shared [the same guest flags]
The log channel then runs mutual TLS 1.3: each side accepts only a peer whose
certificate this CA issued for the other node's name.
`, dir, pairtls.CAFile, pairtls.PrimaryCertFile, pairtls.PrimaryKeyFile, pairtls.BackupCertFile, pairtls.BackupKeyFile, defaultTLSDir)
	return 0, nil
}
