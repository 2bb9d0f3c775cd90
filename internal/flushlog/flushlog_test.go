package flushlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

const childEnv = "FLUSHLOG_TEST_CHILD" // MODE:PATH

func event(seq uint64) *logpb.Event {
	return &logpb.Event{Seq: seq, Exits: seq, Kind: &logpb.Event_Clock{Clock: int64(seq) * 1000}}
}

// TestChildWriter is the process the crash tests kill: it appends an event
// a millisecond to a Log, saying on stdout how many it has appended. In
// mode "idle" it stops after 300 and says "idle N".
func TestChildWriter(t *testing.T) {
	mode, path, ok := strings.Cut(os.Getenv(childEnv), ":")
	if !ok {
		t.Skip("the crash tests' child process")
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := logio.NewWriter(f, &logpb.Header{Version: 1, Recorder: "flushlog test"})
	if err != nil {
		t.Fatal(err)
	}
	l := New(w, Interval)
	for seq := uint64(1); ; seq++ {
		if err := l.Append(event(seq)); err != nil {
			t.Fatal(err)
		}
		if mode == "idle" && seq == 300 {
			fmt.Printf("idle %d\n", seq)
			select {} // killed here
		}
		if seq%20 == 0 {
			fmt.Printf("appended %d\n", seq)
		}
		time.Sleep(time.Millisecond)
	}
}

// crash runs the child in mode until ready accepts one of its lines, waits
// three flush intervals, kills it with SIGKILL and returns the number of
// events the log holds and the number ready returned.
func crash(t *testing.T, mode string, ready func(line string) (uint64, bool)) (got, want uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crash.log")
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode+":"+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, ok := ready(sc.Text()); ok {
			want = n
			break
		}
	}
	if want == 0 {
		t.Fatalf("the child ended before it was ready: %v", sc.Err())
	}
	time.Sleep(3 * Interval)
	cmd.Process.Signal(syscall.SIGKILL)
	go io.Copy(io.Discard, out)
	cmd.Wait()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := logio.NewReader(f)
	if err != nil {
		t.Fatalf("the killed child's log has no readable header: %v", err)
	}
	for {
		ev, err := r.Next()
		if err != nil {
			if err != io.EOF && !errors.Is(err, logio.ErrTruncated) {
				t.Fatalf("after %d events: %v", got, err)
			}
			return got, want
		}
		if ev.GetSeq() != got+1 {
			t.Fatalf("event %d has seq %d", got+1, ev.GetSeq())
		}
		got++
	}
}

// A writer killed while idle loses nothing it appended a flush interval
// before.
func TestKilledWhileIdleKeepsEverything(t *testing.T) {
	got, want := crash(t, "idle", func(line string) (uint64, bool) {
		n, err := strconv.ParseUint(strings.TrimPrefix(line, "idle "), 10, 64)
		return n, strings.HasPrefix(line, "idle ") && err == nil
	})
	if got != want {
		t.Fatalf("the log holds %d events; the child appended %d before it idled and was killed %v later", got, want, 3*Interval)
	}
}

// A writer killed mid-write keeps every event appended more than a flush
// interval before the kill. Without the timer, at this rate the 64 KiB
// buffer would hold the first seconds of events.
func TestKilledMidWriteKeepsAllButTheLastInterval(t *testing.T) {
	got, want := crash(t, "busy", func(line string) (uint64, bool) {
		n, err := strconv.ParseUint(strings.TrimPrefix(line, "appended "), 10, 64)
		return n, err == nil && n >= 200
	})
	if got < want {
		t.Fatalf("the log holds %d events; the child had appended %d at least %v before it was killed", got, want, 3*Interval)
	}
	t.Logf("%d events in the log; %d appended %v before the kill", got, want, 3*Interval)
}

// Close flushes what the timer has not, and the log ends complete.
func TestCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "closed.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := logio.NewWriter(f, &logpb.Header{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	l := New(w, time.Hour)
	for seq := uint64(1); seq <= 10; seq++ {
		if err := l.Append(event(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Fatalf("%d bytes in the file before any flush: the test's premise fails", fi.Size())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != l.Bytes() {
		t.Fatalf("%d bytes in the file after Close, want %d", fi.Size(), l.Bytes())
	}
	if err := l.Append(event(11)); err == nil {
		t.Fatal("Append after Close succeeded")
	}
}
