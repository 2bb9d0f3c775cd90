package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
)

// cmdStatus prints the state a primary or backup serves on its
// --metrics-addr: `ftvm status ADDR [--json]`. It exits 0 while the side
// is protected (a primary with a backup, a backup replaying), 8 while it
// is not (exitUnprotected), 1 if the side cannot be reached.
func cmdStatus(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the status as JSON (the fields of ft.Status)")
	addr, err := oneArg(fs, args, "address (the side's --metrics-addr, HOST:PORT)")
	if err != nil {
		return exitUsage, err
	}
	s, err := ftmetrics.Fetch(ctx, addr)
	if err != nil {
		return exitError, err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return exitError, err
		}
	} else {
		printStatus(os.Stdout, s)
	}
	if !s.Protected {
		return exitUnprotected, nil
	}
	return exitOK, nil
}

// printStatus writes a status for a person: the verdict first, as VMware
// FT shows Protected / Not Protected, then the figures.
func printStatus(w io.Writer, s ft.Status) {
	verdict := "NOT PROTECTED"
	if s.Protected {
		verdict = "PROTECTED"
	}
	fmt.Fprintf(w, "%s: %s (%s", s.Role, verdict, s.State)
	if !s.Since.IsZero() {
		fmt.Fprintf(w, " for %v", time.Since(s.Since).Round(time.Second))
	}
	fmt.Fprint(w, ")")
	if s.Reason != "" {
		fmt.Fprintf(w, ": %s", s.Reason)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  generation %d, %d guest exits\n", s.Generation, s.Exits)
	fmt.Fprintf(w, "  log: %d entries, %d bytes, %.0f bytes/s\n", s.LogEntries, s.LogBytes, s.LogBytesPerSecond)
	fmt.Fprintf(w, "  lag: %d entries, %d bytes, oldest %v; peer last heard %v ago\n", s.LagEntries, s.LagBytes, s.LagAge.Round(time.Millisecond), s.LastAckAge.Round(time.Millisecond))
	if s.Role == "primary" {
		fmt.Fprintf(w, "  output commit: p50 %v, p99 %v; %d bytes released; channel round trip %v\n", s.CommitP50.Round(10*time.Microsecond), s.CommitP99.Round(10*time.Microsecond), s.Released, s.RTT.Round(10*time.Microsecond))
	}
}
