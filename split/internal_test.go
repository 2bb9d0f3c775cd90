package split

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func newHungArbiter(t *testing.T, timeout time.Duration) (a *FileArbiter, calls *atomic.Int32, release func()) {
	t.Helper()
	// Not t.TempDir: once released, the hung storage call goes on writing
	// in the directory while t.TempDir's cleanup removes it, and that
	// removal then fails the test ("directory not empty").
	dir, err := os.MkdirTemp("", "split-hung-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runs after release (cleanups run last first)
		for i := 0; i < 50 && os.RemoveAll(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	a, err = NewFileArbiter(FileConfig{Dir: dir, Pair: "vm1", Node: "hostA", Generation: 1, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	calls = new(atomic.Int32)
	hung := make(chan struct{})
	// The storage hangs until released, like an NFS hard mount whose
	// server is gone; the hook runs where the syscalls would block.
	a.hook = func(string) {
		calls.Add(1)
		<-hung
	}
	released := false
	release = func() {
		if !released {
			released = true
			close(hung)
		}
	}
	t.Cleanup(release)
	return a, calls, release
}

func mustBeUnreachable(t *testing.T, err error, wants ...string) {
	t.Helper()
	if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrLost) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("message %q does not contain %q", err, want)
		}
	}
}

// A hung mount: the arbiter gives up after its timeout, reports
// ErrUnreachable, does not pile up blocked goroutines, and once the
// storage comes back the abandoned claim lands and a retry finds it.
func TestHungStorageTimesOut(t *testing.T) {
	const timeout = 100 * time.Millisecond
	ctx := context.Background()
	a, calls, release := newHungArbiter(t, timeout)

	start := time.Now()
	err := a.TestAndSet(ctx)
	elapsed := time.Since(start)
	mustBeUnreachable(t, err, "no answer within 100ms", a.dir, "generation 1", "blocked in the background")
	t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
	if elapsed < timeout || elapsed > timeout+5*time.Second {
		t.Fatalf("gave up after %v, want about %v", elapsed, timeout)
	}

	// Still hung: later operations wait for the blocked call, not for a
	// new goroutine of their own.
	mustBeUnreachable(t, a.TestAndSet(ctx), "still blocked")
	_, err = a.Owner(ctx)
	mustBeUnreachable(t, err, "still blocked")
	_, err = a.Advance(ctx)
	mustBeUnreachable(t, err, "still blocked")
	if a.Generation() != 1 {
		t.Fatalf("generation %d after a failed Advance, want 1", a.Generation())
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d storage calls started while the first was blocked, want 1", n)
	}
	if _, err := os.Stat(a.ClaimPath(1)); err == nil {
		t.Fatal("claim exists while the storage hung")
	}

	// The storage comes back: the abandoned claim completes.
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(a.ClaimPath(1)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the abandoned claim never landed")
		}
		time.Sleep(time.Millisecond)
	}
	a.timeout = 10 * time.Second // nothing hangs any more; do not race the slot
	if err := a.TestAndSet(ctx); err != nil {
		t.Fatalf("retry after the storage came back: %v", err)
	}
	b, err := NewFileArbiter(FileConfig{Dir: a.dir, Pair: "vm1", Node: "hostB", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.TestAndSet(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("peer after the late claim: %v, want ErrLost", err)
	}
}

// The caller's context bounds the wait too, and its error is wrapped.
func TestHungStorageContextDeadline(t *testing.T) {
	a, _, _ := newHungArbiter(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.TestAndSet(ctx)
	mustBeUnreachable(t, err, "before the context ended")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v does not wrap context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("gave up after %v, want about 50ms", elapsed)
	}
}

func TestCanceledContextTouchesNothing(t *testing.T) {
	a, calls, _ := newHungArbiter(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := a.TestAndSet(ctx)
	mustBeUnreachable(t, err, "not started")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v does not wrap context.Canceled", err)
	}
	if calls.Load() != 0 {
		t.Fatal("a storage call started with a canceled context")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	want := Record{Pair: "vm1", Generation: 1<<64 - 2, Owner: "hôst-A:7000", When: time.Date(2026, 11, 3, 10, 0, 0, 123456789, time.UTC)}
	data := encodeRecord(want)
	got, err := decodeRecord(data)
	if err != nil || !got.When.Equal(want.When) || got.Pair != want.Pair || got.Generation != want.Generation || got.Owner != want.Owner {
		t.Fatalf("decode(encode(%+v)) = %+v, %v\n%s", want, got, err, data)
	}
	// Every single-byte change is caught.
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x01
		if _, err := decodeRecord(bad); err == nil {
			t.Fatalf("flipping byte %d (%q) went unnoticed", i, data[i])
		}
	}
}

// Whatever the bytes, decodeRecord does not panic, and what it accepts
// encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(Record{Pair: "vm1", Generation: 3, Owner: "hostA", When: time.Unix(0, 0)}))
	f.Add([]byte("ftkvm split claim v1\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeRecord(data)
		if err != nil {
			return
		}
		if again := encodeRecord(rec); !bytes.Equal(again, data) {
			t.Fatalf("accepted %q, which encodes back as %q", data, again)
		}
	})
}
