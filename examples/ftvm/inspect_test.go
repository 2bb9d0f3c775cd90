package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

// writeTestLog writes a small log of every kind of event and returns its
// path and bytes.
func writeTestLog(t *testing.T) (string, []byte) {
	t.Helper()
	h := &logpb.Header{
		Version:       1,
		CpuidSha256:   bytes.Repeat([]byte{0xc1}, 32),
		MemoryBytes:   128 << 20,
		KernelSha256:  append([]byte{0x3f, 0xa2, 0xc1, 0x04, 0x05, 0x06}, make([]byte, 26)...),
		Cmdline:       "console=ttyS0 quiet",
		EpochUnixNano: 1_700_000_000_000_000_000,
		Verify:        true,
		RdtscSites:    7,
		Recorder:      "ftvm test",
	}
	events := []*logpb.Event{
		{Kind: &logpb.Event_Clock{Clock: 1_500_000}},
		{Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Timer: true}}},
		{Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Landmark: &logpb.Landmark{Rip: 0x1000, Pages: []uint32{1, 2}}, Input: []byte("ls\n")}}},
		{Kind: &logpb.Event_Inject{Inject: 0x20}},
		{Kind: &logpb.Event_Tsc{Tsc: 99}},
		{Kind: &logpb.Event_Read{Read: &logpb.Read{Addr: 0x3f8, Data: []byte{0x41}}}},
		{Kind: &logpb.Event_Fingerprint{Fingerprint: &logpb.Fingerprint{Sha256: bytes.Repeat([]byte{0xab}, 32)}}},
		{Kind: &logpb.Event_Clock{Clock: 2_000_000}},
		{Kind: &logpb.Event_End{End: &logpb.End{Reason: 1, Status: 3, Fingerprint: &logpb.Fingerprint{Sha256: bytes.Repeat([]byte{0xee}, 32)}}}},
	}
	return writeLog(t, h, events)
}

// writeLog writes header h and events, numbered from 1, to a new log.
func writeLog(t *testing.T, h *logpb.Header, events []*logpb.Event) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run.ftlog")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := logio.NewWriter(f, h)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range events {
		ev.Seq, ev.Exits = uint64(i+1), 100+uint64(i)*10
		if err := w.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

func runInspect(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	var out bytes.Buffer
	code, err := inspect(&out, args)
	return out.String(), code, err
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("output lacks %q:\n%s", l, out)
		}
	}
}

func TestInspect(t *testing.T) {
	path, _ := writeTestLog(t)
	out, code, err := runInspect(t, path)
	if err != nil || code != 0 {
		t.Fatalf("inspect = %d, %v", code, err)
	}
	wantLines(t, out,
		"version    1\n",
		"memory     128 MiB\n",
		`cmdline    "console=ttyS0 quiet"`,
		"kernel     3fa2c1040506\n",
		"initrd     -\n",
		"cpuid      c1c1c1c1c1c1\n",
		"verify     true\n",
		"rdtsc      7 patched sites\n",
		`recorder   "ftvm test"`,
		"epoch      2023-11-14T22:13:20Z\n",
		"total                       9",
		"exits      100 .. 180 (80)\n",
		"end        exit port, status 3, fingerprint "+strings.Repeat("ee", 32)+"\n",
	)
	// Counts and percentages by kind: 2 of 9 events are clock reads.
	for _, kind := range []struct {
		name, count string
	}{{"clock", "2   22.2%"}, {"deliver", "1   11.1%"}, {"deliver+landmark", "1   11.1%"}, {"inject", "1   11.1%"},
		{"tsc", "1   11.1%"}, {"read", "1   11.1%"}, {"fingerprint", "1   11.1%"}, {"end", "1   11.1%"}} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 5 && f[0] == kind.name && strings.Join(f[1:3], "   ") == kind.count {
				found = true
			}
		}
		if !found {
			t.Errorf("no table line for %s with %s:\n%s", kind.name, kind.count, out)
		}
	}
	if strings.Contains(out, "first events") {
		t.Error("events listed without --events")
	}
}

// TestInspectDeviceTraffic: transfers are counted by the device their tag's
// top byte names, with the header's device names.
func TestInspectDeviceTraffic(t *testing.T) {
	const nic = 1 << 56 // the second bounce device
	dma := func(c ...*logpb.Dma) *logpb.Event {
		return &logpb.Event{Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Dma: c}}}
	}
	submit := func(tag uint64, n uint32) *logpb.Event {
		return &logpb.Event{Kind: &logpb.Event_Submit{Submit: &logpb.Submit{Tag: tag, Len: n}}}
	}
	path, _ := writeLog(t, &logpb.Header{Version: 1, Devices: []string{"virtio-blk@0xd0020000 size=512", "virtio-net@0xd0021000 mac=52:54:00:f7:00:01"}},
		[]*logpb.Event{
			dma(&logpb.Dma{Tag: 3, Data: make([]byte, 512)}),
			submit(nic+2, 60),
			dma(&logpb.Dma{Tag: nic + 1, Data: make([]byte, 100)}, &logpb.Dma{Tag: nic + 2}),
			submit(nic+3, 1514),
			dma(&logpb.Dma{Tag: nic + 4, Error: "net: link closed"}, &logpb.Dma{Tag: 5 << 56, Data: []byte{1}}),
			{Kind: &logpb.Event_End{End: &logpb.End{Reason: 2}}},
		})
	out, code, err := runInspect(t, path)
	if err != nil || code != 0 {
		t.Fatalf("inspect = %d, %v", code, err)
	}
	wantLines(t, out,
		"devices    virtio-blk@0xd0020000 size=512, virtio-net@0xd0021000 mac=52:54:00:f7:00:01\n",
		"dma        device 0 (virtio-blk@0xd0020000): 1 completions, 1 carrying 512 bytes, 0 errors; 0 writes submitted, 0 bytes\n",
		"dma        device 1 (virtio-net@0xd0021000): 3 completions, 1 carrying 100 bytes, 1 errors; 2 writes submitted, 1574 bytes\n",
		"dma        device 5 (?): 1 completions, 1 carrying 1 bytes, 0 errors; 0 writes submitted, 0 bytes\n",
	)
	// A log without transfers has no dma lines.
	plain, _ := writeTestLog(t)
	if out, _, _ := runInspect(t, plain); strings.Contains(out, "dma ") {
		t.Errorf("dma lines for a log without transfers:\n%s", out)
	}
}

func TestInspectEvents(t *testing.T) {
	path, _ := writeTestLog(t)
	out, code, err := runInspect(t, "--events", "4", path)
	if err != nil || code != 0 {
		t.Fatalf("inspect = %d, %v", code, err)
	}
	wantLines(t, out,
		"       1  exits 100        clock   1.5ms\n",
		"       2  exits 110        deliver at the exit, timer\n",
		"       3  exits 120        deliver at rip 0x1000 rflags 0x0, 2 pages, input \"ls\\n\"\n",
		"       4  exits 130        inject  vector 0x20\n",
	)
	if strings.Contains(out, "tsc     99") {
		t.Errorf("--events 4 printed a fifth event:\n%s", out)
	}
}

func TestInspectDamaged(t *testing.T) {
	path, data := writeTestLog(t)
	// Cut the log in the middle of its last record.
	if err := os.WriteFile(path, data[:len(data)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	out, code, err := runInspect(t, path)
	if code != exitBadLog || !errors.Is(err, logio.ErrTruncated) {
		t.Fatalf("inspect of a cut log = %d, %v; want %d, ErrTruncated", code, err, exitBadLog)
	}
	if !strings.Contains(err.Error(), "record 9") {
		t.Errorf("error %q does not name the damaged record", err)
	}
	wantLines(t, out, "memory     128 MiB\n", "total                       8", "end        none", "damaged    ")
}

func TestInspectNotALog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(path, []byte("\x7fELF\x02\x01\x01"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, err := inspect(&bytes.Buffer{}, []string{path}); code == 0 || !errors.Is(err, logio.ErrBadMagic) {
		t.Errorf("inspect = %d, %v; want non-zero, ErrBadMagic", code, err)
	}
}

func TestInspectUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"a", "b"}, {"a", "--events", "1", "b"}, {"--events", "x", "f"}, {"--events", "-1", "f"}, {"--bogus", "f"}, {"f", "--bogus"}} {
		code, err := inspect(&bytes.Buffer{}, args)
		var ue usageError
		if code != 2 || !errors.As(err, &ue) {
			t.Errorf("inspect %q = %d, %v; want 2, a usage error", args, code, err)
		}
	}
}

// The log file may come before, between or after the flags; '--' lets a
// file named like a flag through.
func TestInspectArgumentOrder(t *testing.T) {
	path, _ := writeTestLog(t)
	dashed := filepath.Join(filepath.Dir(path), "-events")
	if err := os.Link(path, dashed); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{path, "--events", "2"},
		{"--events", "2", path},
		{"--events=2", path, "--from-exit", "0"},
		{"--events", "2", "--", dashed},
	} {
		out, code, err := runInspect(t, args...)
		if err != nil || code != exitOK {
			t.Errorf("inspect %q = %d, %v", args, code, err)
			continue
		}
		if !strings.Contains(out, "       2  exits 110") || strings.Contains(out, "       3  exits 120") {
			t.Errorf("inspect %q did not list exactly 2 events:\n%s", args, out)
		}
	}
}

// A log without its End event (a recording cut short) is reported as
// such, with exit status 7, after what it holds.
func TestInspectIncomplete(t *testing.T) {
	path, _ := writeLog(t, &logpb.Header{Version: 1}, []*logpb.Event{{Kind: &logpb.Event_Tsc{Tsc: 5}}})
	out, code, err := runInspect(t, path)
	if code != exitBadLog || !errors.Is(err, errIncompleteLog) {
		t.Fatalf("inspect of a log without an end = %d, %v; want %d, errIncompleteLog", code, err, exitBadLog)
	}
	wantLines(t, out, "end        none: the recording is incomplete\n", "total                       1")
}

func TestInspectJSON(t *testing.T) {
	path, _ := writeTestLog(t)
	out, code, err := runInspect(t, path, "--json", "--events", "2")
	if err != nil || code != exitOK {
		t.Fatalf("inspect --json = %d, %v", code, err)
	}
	var got inspectJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	if got.File != path || !got.Complete || got.Events != 9 || got.FirstExits != 100 || got.LastExits != 180 {
		t.Errorf("file %q complete %v events %d exits %d..%d; want %q, true, 9, 100..180", got.File, got.Complete, got.Events, got.FirstExits, got.LastExits, path)
	}
	if h := got.Header; h.MemoryBytes != 128<<20 || h.Cmdline != "console=ttyS0 quiet" || h.CPUID != strings.Repeat("c1", 32) || h.RDTSCSites != 7 || h.Epoch != "2023-11-14T22:13:20Z" {
		t.Errorf("header %+v", h)
	}
	if got.End == nil || got.End.Reason != "exit port" || got.End.Status != 3 || got.End.Fingerprint != strings.Repeat("ee", 32) {
		t.Errorf("end %+v", got.End)
	}
	if got.Bytes != got.HeaderBytes+got.EventBytes || got.EventBytes == 0 {
		t.Errorf("bytes %d, header %d, events %d", got.Bytes, got.HeaderBytes, got.EventBytes)
	}
	kinds := map[string]int{}
	for _, k := range got.Kinds {
		kinds[k.Kind] = k.Events
	}
	if kinds["clock"] != 2 || kinds["end"] != 1 || kinds["tsc"] != 1 {
		t.Errorf("kinds %v", kinds)
	}
	if len(got.Listed) != 2 || got.Listed[1].Seq != 2 || got.Listed[1].Event != "deliver at the exit, timer" {
		t.Errorf("listed events %+v", got.Listed)
	}
	if strings.Contains(out, "version    1") {
		t.Error("--json output carries the text too")
	}

	// A damaged log: JSON still, saying so, and exit status 7.
	_, data := writeTestLog(t)
	if err := os.WriteFile(path, data[:len(data)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	out, code, _ = runInspect(t, "--json", path)
	got = inspectJSON{}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitBadLog || got.Complete || got.Damage == "" || got.End != nil || got.Events != 8 {
		t.Errorf("a cut log: code %d, complete %v, damage %q, end %v, events %d (%v)", code, got.Complete, got.Damage, got.End, got.Events, err)
	}
}
