package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

const inspectUsage = `usage: ftvm inspect FILE [--events N] [--from-exit N] [--json]

Print a recorded log's header, its events counted and sized by kind, and how
it ended. A damaged log is reported after what could be read of it.
Exit status: 0 for a whole log, 7 for a damaged or incomplete one (no end
event: the recording was cut short or is still being written).
`

func cmdInspect(args []string) (int, error) { return inspect(os.Stdout, args) }

// inspect implements `ftvm inspect`, printing to w.
func inspect(w io.Writer, args []string) (int, error) {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), inspectUsage)
		fs.PrintDefaults()
	}
	nEvents := fs.Int("events", 0, "also print the first `N` events, one per line")
	fromExit := fs.Uint64("from-exit", 0, "with --events: start printing at the first event at or after this exit count")
	asJSON := fs.Bool("json", false, "print one JSON object instead of text (docs/cli.md describes its fields)")
	name, err := oneArg(fs, args, "log FILE")
	if err != nil {
		return exitUsage, err
	}
	if *nEvents < 0 {
		return exitUsage, usageError{fmt.Errorf("--events %d: must not be negative", *nEvents)}
	}

	f, err := os.Open(name)
	if err != nil {
		return exitError, err
	}
	defer f.Close()
	r, err := logio.NewReader(f)
	if err != nil {
		return exitBadLog, fmt.Errorf("%s: %w", name, err)
	}
	text := w
	if *asJSON {
		text = io.Discard
	}
	headerBytes := r.Offset()
	printHeader(text, name, r.Header())
	var listed []jsonEvent

	var s logio.Summary
	var dma deviceTraffic
	var damage error
	for {
		start := r.Offset()
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			damage = err
			break
		}
		if len(listed) < *nEvents && ev.GetExits() >= *fromExit {
			if len(listed) == 0 {
				fmt.Fprintf(text, "\nevents:\n")
			}
			listed = append(listed, jsonEvent{Seq: ev.GetSeq(), Exits: ev.GetExits(), Event: formatEvent(ev)})
			fmt.Fprintf(text, "%8d  exits %-10d %s\n", ev.GetSeq(), ev.GetExits(), formatEvent(ev))
		}
		s.Add(ev, r.Offset()-start)
		dma.add(ev)
	}
	s.Bytes = headerBytes + s.EventBytes // the intact part
	printSummary(text, &s, headerBytes)
	dma.print(text, r.Header().GetDevices())
	if damage != nil {
		fmt.Fprintf(text, "damaged    %v\n", damage)
		err = fmt.Errorf("%s: damaged log, read %d of its events: %w", name, s.Events, damage)
	} else if s.End == nil {
		err = fmt.Errorf("%s: %w", name, errIncompleteLog)
	}
	if *asJSON {
		if jerr := writeJSON(w, name, r.Header(), &s, headerBytes, dma, listed, damage); jerr != nil {
			return exitError, jerr
		}
	}
	if err != nil {
		return exitBadLog, err
	}
	return exitOK, nil
}

func printHeader(w io.Writer, name string, h *logpb.Header) {
	fmt.Fprintf(w, "log        %s\n", name)
	fmt.Fprintf(w, "version    %d\n", h.GetVersion())
	fmt.Fprintf(w, "memory     %s\n", mib(h.GetMemoryBytes()))
	fmt.Fprintf(w, "cmdline    %q\n", h.GetCmdline())
	fmt.Fprintf(w, "kernel     %s\n", shortHash(h.GetKernelSha256()))
	fmt.Fprintf(w, "initrd     %s\n", shortHash(h.GetInitrdSha256()))
	fmt.Fprintf(w, "image      %s\n", shortHash(h.GetImageSha256()))
	fmt.Fprintf(w, "cpuid      %s\n", shortHash(h.GetCpuidSha256()))
	fmt.Fprintf(w, "devices    %s\n", orNone(strings.Join(h.GetDevices(), ", ")))
	fmt.Fprintf(w, "verify     %t\n", h.GetVerify())
	fmt.Fprintf(w, "rdtsc      %d patched sites\n", h.GetRdtscSites())
	fmt.Fprintf(w, "landmarks  %s\n", orNone(h.GetLandmarks()))
	fmt.Fprintf(w, "fprints    %s\n", orNone(h.GetFingerprint()))
	fmt.Fprintf(w, "recorder   %q\n", h.GetRecorder())
	fmt.Fprintf(w, "epoch      %s\n", time.Unix(0, h.GetEpochUnixNano()).UTC().Format(time.RFC3339Nano))
}

func printSummary(w io.Writer, s *logio.Summary, headerBytes int64) {
	fmt.Fprintf(w, "\n%-18s %10s %7s %12s %7s\n", "kind", "events", "%", "bytes", "%")
	for k := range logio.NumKinds {
		ks := s.Kinds[k]
		fmt.Fprintf(w, "%-18s %10d %7s %12d %7s\n", k, ks.Events, percent(int64(ks.Events), int64(s.Events)),
			ks.Bytes, percent(ks.Bytes, s.EventBytes))
	}
	fmt.Fprintf(w, "%-18s %10d %7s %12d %7s\n", "total", s.Events, "", s.EventBytes, "")
	fmt.Fprintf(w, "\nsize       %d bytes: %d of header, %d of events\n", s.Bytes, headerBytes, s.EventBytes)
	if s.Events > 0 {
		fmt.Fprintf(w, "exits      %d .. %d (%d)\n", s.FirstExits, s.LastExits, s.LastExits-s.FirstExits)
	}
	if e := s.End; e != nil {
		fmt.Fprintf(w, "end        %s, status %d, fingerprint %s\n", vmm.StopReason(e.GetReason()), e.GetStatus(),
			orNone(hex.EncodeToString(e.GetFingerprint().GetSha256())))
		if e.GetError() != "" {
			fmt.Fprintf(w, "error      %s\n", e.GetError())
		}
	} else {
		fmt.Fprintf(w, "end        none: the recording is incomplete\n")
	}
}

// deviceTraffic counts a log's device transfers by the device their tag
// names (its bounce slot: vmm.TagShift), so that a log can be seen to hold
// a device's data: a NIC's received frames are completions that carry
// bytes, its transmitted frames are submitted writes.
type deviceTraffic map[uint64]*slotTraffic

type slotTraffic struct {
	completions, withData, errors int
	bytes                         int64
	submits                       int
	submitBytes                   int64
}

func (d *deviceTraffic) slot(tag uint64) *slotTraffic {
	if *d == nil {
		*d = make(deviceTraffic)
	}
	n := tag >> vmm.TagShift
	if (*d)[n] == nil {
		(*d)[n] = &slotTraffic{}
	}
	return (*d)[n]
}

func (d *deviceTraffic) add(ev *logpb.Event) {
	for _, c := range ev.GetDeliver().GetDma() {
		st := d.slot(c.GetTag())
		st.completions++
		if len(c.GetData()) > 0 {
			st.withData++
			st.bytes += int64(len(c.GetData()))
		}
		if c.GetError() != "" {
			st.errors++
		}
	}
	if sub := ev.GetSubmit(); sub != nil {
		st := d.slot(sub.GetTag())
		st.submits++
		st.submitBytes += int64(sub.GetLen())
	}
}

// print writes one line per device; devices are the header's extra
// devices, which the VM adds in the order of their bounce slots.
func (d deviceTraffic) print(w io.Writer, devices []string) {
	slots := make([]uint64, 0, len(d))
	for n := range d {
		slots = append(slots, n)
	}
	slices.Sort(slots)
	for _, n := range slots {
		st := d[n]
		name := "?"
		if n < uint64(len(devices)) {
			name, _, _ = strings.Cut(devices[n], " ")
		}
		fmt.Fprintf(w, "dma        device %d (%s): %d completions, %d carrying %d bytes, %d errors; %d writes submitted, %d bytes\n",
			n, name, st.completions, st.withData, st.bytes, st.errors, st.submits, st.submitBytes)
	}
}

// formatEvent renders an event's kind and content on one line.
func formatEvent(ev *logpb.Event) string {
	switch k := ev.GetKind().(type) {
	case *logpb.Event_Clock:
		return fmt.Sprintf("clock   %v", time.Duration(k.Clock))
	case *logpb.Event_Deliver:
		d := k.Deliver
		var b strings.Builder
		b.WriteString("deliver")
		if lm := d.GetLandmark(); d.AtWindow() {
			fmt.Fprintf(&b, " at the first window exit, rip %#x rflags %#x", lm.GetRip(), lm.GetRflags())
		} else if lm != nil {
			fmt.Fprintf(&b, " at rip %#x rflags %#x, %d pages", lm.GetRip(), lm.GetRflags(), len(lm.GetPages()))
		} else {
			b.WriteString(" at the exit")
		}
		if d.GetTimer() {
			b.WriteString(", timer")
		}
		if in := d.GetInput(); len(in) > 0 {
			fmt.Fprintf(&b, ", input %s", quoteBytes(in))
		}
		for _, c := range d.GetDma() {
			fmt.Fprintf(&b, ", dma tag %d %d bytes", c.GetTag(), len(c.GetData()))
			if c.GetError() != "" {
				fmt.Fprintf(&b, " error %q", c.GetError())
			}
		}
		return b.String()
	case *logpb.Event_Inject:
		return fmt.Sprintf("inject  vector %#x", k.Inject)
	case *logpb.Event_Tsc:
		return fmt.Sprintf("tsc     %d", k.Tsc)
	case *logpb.Event_Read:
		space := "pio"
		if k.Read.GetMmio() {
			space = "mmio"
		}
		return fmt.Sprintf("read    %s %#x = %x", space, k.Read.GetAddr(), k.Read.GetData())
	case *logpb.Event_Fingerprint:
		return "fingerprint " + shortHash(k.Fingerprint.GetSha256())
	case *logpb.Event_Output:
		return fmt.Sprintf("output  %s (%d released before)", quoteBytes(k.Output.GetData()), k.Output.GetReleased())
	case *logpb.Event_Submit:
		return fmt.Sprintf("submit  write tag %#x, %d bytes", k.Submit.GetTag(), k.Submit.GetLen())
	case *logpb.Event_Handover:
		h := k.Handover
		return fmt.Sprintf("handover the backup went live here (%s, at %v), fingerprint %s: its own run follows",
			h.GetReason(), vmm.PointKind(h.GetKind()), shortHash(h.GetFingerprint().GetSha256()))
	case *logpb.Event_End:
		e := k.End
		s := fmt.Sprintf("end     %s, status %d, fingerprint %s", vmm.StopReason(e.GetReason()), e.GetStatus(),
			shortHash(e.GetFingerprint().GetSha256()))
		if e.GetError() != "" {
			s += fmt.Sprintf(", error %q", e.GetError())
		}
		return s
	}
	return "(no kind)"
}

// quoteBytes quotes console input, eliding all but the first 32 bytes.
func quoteBytes(p []byte) string {
	const max = 32
	if len(p) <= max {
		return fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("%q… (%d bytes)", p[:max], len(p))
}

func shortHash(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 12 {
		s = s[:12]
	}
	return orNone(s)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mib(n uint64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
}

func percent(part, whole int64) string {
	if whole == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(whole))
}
