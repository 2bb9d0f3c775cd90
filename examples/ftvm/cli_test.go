package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/snapshot"
	"github.com/ftkvm/ftkvm/split"
	"github.com/ftkvm/ftkvm/vmm"
)

// Each kind of failure has its own exit status, and none is a guest's.
func TestExitCodes(t *testing.T) {
	lost := &split.LostError{Winner: split.Record{Pair: "ftvm", Generation: 2, Owner: "primary@a"}, Path: "/s/ftvm.claim"}
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("reading kernel: no such file"), exitError},
		{usageError{errors.New("-o FILE is required")}, exitUsage},
		{fmt.Errorf("ft: %w", usageError{errors.New("x")}), exitUsage},
		{&noKVMError{why: "open /dev/kvm: no such file or directory"}, exitNoKVM},
		{&replay.DivergenceError{}, exitDiverged},
		{fmt.Errorf("backup: %w", &replay.DivergenceError{}), exitDiverged},
		{fmt.Errorf("halted: the primary is live (%w)", lost), exitLostClaim},
		// The primary's halt wraps the claim's error; its words alone do
		// not count (a guest may print them).
		{fmt.Errorf("halted: the backup is live: %w", lost), exitLostClaim},
		{fmt.Errorf("halted: the claim was lost while running alone: %w", split.ErrLeaseExpired), exitLostClaim},
		{errors.New("halted: the backup is live (" + lost.Error() + ")"), exitError},
		{errors.New("halted: split-brain storage unreachable (storage unreachable)"), exitError},
		{&logio.FormatError{Record: 3, Err: logio.ErrCorrupt}, exitBadLog},
		{fmt.Errorf("f.log: %w", errIncompleteLog), exitBadLog},
		{fmt.Errorf("s.snap: %w", snapshot.ErrCorrupt), exitBadLog},
		{fmt.Errorf("s.snap: %w", snapshot.ErrMismatch), exitError},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	codes := map[int]bool{}
	for _, c := range []int{exitOK, exitError, exitUsage, exitReset, exitDiverged, exitLostClaim, exitNoKVM, exitBadLog, exitGuestStatus} {
		if codes[c] {
			t.Errorf("exit status %d used twice", c)
		}
		codes[c] = true
		if !strings.Contains(exitCodes, fmt.Sprintf("\n  %-3d ", c)) {
			t.Errorf("exit status %d is not in the help's table", c)
		}
	}
}

// The guest's status is never ftvm's own: any non-zero status is
// exitGuestStatus, whatever its value.
func TestReportKeepsTheGuestsStatusApart(t *testing.T) {
	info := func(string, ...any) {}
	for _, c := range []struct {
		res  vmm.Result
		want int
	}{
		{vmm.Result{Reason: vmm.StopPowerOff}, exitOK},
		{vmm.Result{Reason: vmm.StopExitPort, Status: 0}, exitOK},
		{vmm.Result{Reason: vmm.StopExitPort, Status: 1}, exitGuestStatus},
		{vmm.Result{Reason: vmm.StopExitPort, Status: 2}, exitGuestStatus},
		{vmm.Result{Reason: vmm.StopExitPort, Status: 42}, exitGuestStatus},
		{vmm.Result{Reason: vmm.StopReset}, exitReset},
	} {
		if got, err := report(info, c.res, nil); got != c.want || err != nil {
			t.Errorf("report(%v status %d) = %d, %v; want %d", c.res.Reason, c.res.Status, got, err, c.want)
		}
	}
	if got, _ := report(info, vmm.Result{}, &replay.DivergenceError{}); got != exitDiverged {
		t.Errorf("report of a divergence = %d, want %d", got, exitDiverged)
	}
}

func TestCheckKVM(t *testing.T) {
	dir := t.TempDir()
	defer func(d, m string) { kvmDevice, pvmModule = d, m }(kvmDevice, pvmModule)
	kvmDevice, pvmModule = filepath.Join(dir, "kvm"), filepath.Join(dir, "kvm_pvm")
	t.Setenv("FTKVM_KVM", "")

	err := checkKVM()
	var nk *noKVMError
	if !errors.As(err, &nk) || exitCode(err) != exitNoKVM {
		t.Fatalf("no device: %v (status %d), want a noKVMError", err, exitCode(err))
	}
	// The error says where to run instead: the emulated host the project ships.
	for _, want := range []string{"no such file", "go run ./cmd/testbed setup", "go run ./cmd/testbed -- bin/ftvm run", "make demo"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if err := os.WriteFile(kvmDevice, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := checkKVM(); err != nil {
		t.Fatalf("a device that opens: %v", err)
	}
	if err := os.Mkdir(pvmModule, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkKVM(); !errors.As(err, &nk) || !strings.Contains(err.Error(), "kvm-pvm") {
		t.Fatalf("kvm-pvm: %v, want a noKVMError naming kvm-pvm", err)
	}
	t.Setenv("FTKVM_KVM", "native")
	if err := checkKVM(); err != nil {
		t.Fatalf("kvm-pvm with FTKVM_KVM=native: %v", err)
	}
}

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  []string
		n    int
	}{
		{[]string{"f.log", "--n", "2"}, []string{"f.log"}, 2},
		{[]string{"--n", "2", "f.log"}, []string{"f.log"}, 2},
		{[]string{"a", "--n=3", "b"}, []string{"a", "b"}, 3},
		{[]string{"a", "--", "--n", "b"}, []string{"a", "--n", "b"}, 0},
		{[]string{"--", "-x"}, []string{"-x"}, 0},
		{nil, nil, 0},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		n := fs.Int("n", 0, "")
		pos, err := parseArgs(fs, c.args)
		if err != nil || fmt.Sprint(pos) != fmt.Sprint(c.pos) || *n != c.n {
			t.Errorf("parseArgs(%q) = %q, n %d, %v; want %q, n %d", c.args, pos, *n, err, c.pos, c.n)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	if _, err := parseArgs(fs, []string{"a", "--bogus"}); exitCode(err) != exitUsage {
		t.Errorf("an unknown flag after an argument: %v, want a usage error", err)
	}
	if _, err := parseArgs(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	if err := parseFlags(fs, []string{"x"}); exitCode(err) != exitUsage {
		t.Errorf("parseFlags with an argument: %v, want a usage error", err)
	}
}

// Flags that only matter to a log or an FT pair do not show in run.
func TestRunHidesFTOnlyFlags(t *testing.T) {
	flags := func(scope flagScope) *flag.FlagSet {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var o guestOptions
		o.register(fs, scope)
		return fs
	}
	for _, name := range []string{"disk-mode", "disk-generation", "guest-ip"} {
		if flags(scopeRun).Lookup(name) != nil {
			t.Errorf("run has --%s", name)
		}
		for _, s := range []flagScope{scopeLog, scopePair} {
			if flags(s).Lookup(name) == nil {
				t.Errorf("scope %d lacks --%s", s, name)
			}
		}
	}
	for _, name := range []string{"disk", "net", "mac", "kernel", "bare", "mem"} {
		if flags(scopeRun).Lookup(name) == nil {
			t.Errorf("run lacks --%s", name)
		}
	}
	var o guestOptions
	o.register(flag.NewFlagSet("t", flag.ContinueOnError), scopeRun)
	if o.devices.diskMode != "shared" {
		t.Errorf("run's disk mode %q, want shared", o.devices.diskMode)
	}
}

func TestVersion(t *testing.T) {
	v := version()
	if !strings.HasPrefix(v, "ftvm ") || !strings.Contains(v, fmt.Sprintf("log format %d", logio.FormatVersion)) {
		t.Errorf("version %q", v)
	}
	got := vcsRevision([]debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-08T01:00:00Z"}, {Key: "vcs.modified", Value: "true"}})
	if got != "commit 0123456789ab (2026-12-08T01:00:00Z, modified)" {
		t.Errorf("vcsRevision = %q", got)
	}
	if vcsRevision(nil) != "" {
		t.Error("a revision without VCS settings")
	}
	for _, cmd := range []string{"version", "--version"} {
		if code, err := dispatch(t.Context(), cmd, nil); code != exitOK || err != nil {
			t.Errorf("ftvm %s = %d, %v", cmd, code, err)
		}
	}
	if code, err := dispatch(t.Context(), "bogus", nil); code != exitUsage || exitCode(err) != exitUsage {
		t.Errorf("an unknown command = %d, %v; want a usage error", code, err)
	}
}

// record's log is FILE.partial until it ends whole; a failure before the
// recording began leaves nothing, an incomplete one leaves FILE.partial.
func TestRecordLogFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "run.log")
	h := &logpb.Header{Version: 1}

	lf, err := createLog(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := lf.finish(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a failure before the recording left %v", ents)
	}

	lf, _ = createLog(name)
	if err := lf.start(h); err != nil {
		t.Fatal(err)
	}
	lf.Append(&logpb.Event{Seq: 1, Kind: &logpb.Event_Tsc{Tsc: 1}})
	if err := lf.finish(); err == nil || !strings.Contains(err.Error(), name+".partial") {
		t.Fatalf("a log without its end: %v, want an error naming the .partial file", err)
	}
	if _, err := os.Stat(name); err == nil {
		t.Fatal("an incomplete log took the final name")
	}
	if _, err := os.Stat(name + ".partial"); err != nil {
		t.Fatalf("the incomplete log is gone: %v", err)
	}

	lf, _ = createLog(name)
	lf.start(h)
	lf.Append(&logpb.Event{Seq: 1, Kind: &logpb.Event_Tsc{Tsc: 1}})
	lf.Append(&logpb.Event{Seq: 2, Kind: &logpb.Event_End{End: &logpb.End{}}})
	if err := lf.finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name + ".partial"); err == nil {
		t.Error("the .partial file is left beside the whole log")
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := logio.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	s, err := logio.Summarize(r)
	if err != nil || s.Events != 2 || s.End == nil {
		t.Fatalf("the renamed log: %+v, %v", s, err)
	}
}

func TestProgress(t *testing.T) {
	var p progress
	var mem replay.MemLog
	sink := countingSink{&mem, &p}
	for i := range 5 {
		sink.Append(&logpb.Event{Seq: uint64(i + 1), Kind: &logpb.Event_Clock{Clock: int64(i) * int64(time.Second)}})
	}
	if got := p.line("recording", 7*time.Second); got != "ftvm: recording: 5 events, guest time 4.0s, after 7s\n" {
		t.Errorf("line %q", got)
	}
	var q progress
	src := countingSource{&mem, &q}
	for {
		if _, err := src.Next(); err != nil {
			break
		}
	}
	if q.events.Load() != 5 || q.clock.Load() != int64(4*time.Second) {
		t.Errorf("the source counted %d events, clock %d", q.events.Load(), q.clock.Load())
	}

	var buf syncBuffer
	stop := p.print(&buf, "replaying", 10*time.Millisecond)
	time.Sleep(55 * time.Millisecond)
	stop()
	n := strings.Count(buf.String(), "ftvm: replaying: 5 events")
	if n < 2 {
		t.Errorf("%d progress lines in 55ms at a 10ms period:\n%s", n, buf.String())
	}
	after := buf.String()
	time.Sleep(30 * time.Millisecond)
	if buf.String() != after {
		t.Error("a progress line after stop")
	}
	p.print(&buf, "x", 0)() // a period of 0 prints nothing
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Without a usable KVM every guest command exits 6, after checking its
// flags and guest, and a record leaves no file behind.
func TestCommandsWithoutKVM(t *testing.T) {
	dir := t.TempDir()
	defer func(d string) { kvmDevice = d }(kvmDevice)
	kvmDevice = filepath.Join(dir, "no-kvm")
	image := filepath.Join(dir, "hlt.bin")
	if err := os.WriteFile(image, []byte{0xfa, 0xf4}, 0o644); err != nil { // cli; hlt
		t.Fatal(err)
	}
	logPath, _ := writeTestLog(t)
	out := filepath.Join(dir, "out.log")
	for _, args := range [][]string{
		{"run", "-q", "--image", image},
		{"record", "-q", "-o", out, "--image", image},
		{"replay", "-q", logPath, "--image", image},
		{"primary", "-q", "--insecure", "--listen", "127.0.0.1:0", "--split-dir", dir, "--image", image},
		{"backup", "-q", "--insecure", "--connect", "127.0.0.1:1", "--split-dir", dir, "--image", image},
	} {
		code, err := dispatch(t.Context(), args[0], args[1:])
		var nk *noKVMError
		if code != exitNoKVM || !errors.As(err, &nk) {
			t.Errorf("ftvm %q without KVM = %d, %v; want %d, a noKVMError", args, code, err, exitNoKVM)
		}
	}
	for _, p := range []string{out, out + ".partial"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("a record that never ran left %s", p)
		}
	}
	// A usage error comes first.
	if code, err := dispatch(t.Context(), "record", []string{"--image", image}); code != exitUsage || exitCode(err) != exitUsage {
		t.Errorf("record without -o = %d, %v; want a usage error", code, err)
	}
}

// ftvm status reads a side's /status: PROTECTED exits 0, anything else 8,
// and no answer 1.
func TestStatusCommand(t *testing.T) {
	cur := ft.Status{Role: "primary", State: "protected", Protected: true, Generation: 2, CommitP50: 3 * time.Millisecond}
	srv := httptest.NewServer(ftmetrics.Handler("primary", func() (ft.Status, bool) { return cur, true }))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	if code, err := cmdStatus(ctx, []string{addr}); code != exitOK || err != nil {
		t.Fatalf("protected: %d %v", code, err)
	}
	cur = ft.Status{Role: "primary", State: "alone", Reason: "the backup was lost"}
	if code, err := cmdStatus(ctx, []string{"--json", addr}); code != exitUnprotected || err != nil {
		t.Fatalf("alone: %d %v", code, err)
	}
	srv.Close()
	if code, err := cmdStatus(ctx, []string{addr}); code != exitError || err == nil {
		t.Fatalf("no answer: %d %v", code, err)
	}
	if code, _ := cmdStatus(ctx, nil); code != exitUsage {
		t.Fatalf("no address: %d", code)
	}
	var b strings.Builder
	printStatus(&b, ft.Status{Role: "backup", State: "replaying", Protected: true, LagEntries: 5})
	if !strings.Contains(b.String(), "backup: PROTECTED (replaying)") || !strings.Contains(b.String(), "lag: 5 entries") {
		t.Fatalf("printed:\n%s", b.String())
	}
}

// --snapshot and --snapshot-after go together, and are checked before a
// guest is read or KVM is looked for.
func TestSnapshotFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--snapshot", "f.snap"},
		{"--snapshot-after", "1s"},
		{"--snapshot", "f.snap", "--snapshot-after", "-1s"},
	} {
		if code, err := cmdRun(t.Context(), args); code != exitUsage || err == nil {
			t.Errorf("run %q: status %d (%v), want %d", args, code, err, exitUsage)
		}
	}
}

// A snapshot is written whole or not at all, and read back refused when
// it is damaged (exit status 7).
func TestReadSnapshotRefusesDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.snap")
	if err := os.WriteFile(path, []byte(snapshot.Magic+"\x01\x00\x00\x00 not a whole snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := readSnapshot(path)
	if !errors.Is(err, snapshot.ErrCorrupt) || exitCode(err) != exitBadLog {
		t.Fatalf("damaged snapshot: %v (status %d)", err, exitCode(err))
	}
}
