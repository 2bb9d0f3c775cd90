package ft_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// bareGuest describes a bare image for ft, as a VMM embedding the package
// would (rdtsc sites patched, as ftvm does).
func bareGuest(t *testing.T, image []byte, mem uint64) ft.Guest {
	t.Helper()
	p, err := tscpatch.PrepareFlat(image, vmm.BareLoadAddr)
	if err != nil {
		t.Fatal(err)
	}
	image, table, sites := p.Image, p.Table, p.Sites
	return ft.Guest{
		Spec: vmm.Spec{MemoryBytes: mem, TSCSites: table},
		Load: func(vm *vmm.VM) error { return vm.LoadBare(image) },
		Header: func(vm *vmm.VM, epoch time.Time) *logpb.Header {
			return replay.NewHeader(vm, replay.Guest{Bare: true, Kernel: image, RDTSCSites: len(sites)}, epoch, false)
		},
		Bare: true,
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func chatter(t *testing.T, spec ftguest.Spec) []byte {
	t.Helper()
	kvmtest.Require(t)
	path, err := ftguest.Build(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPairInProcess runs both sides in one process, as a VMM embedding
// the package could: the primary's released output is the guest's, the
// backup follows to the end and prints nothing.
func TestPairInProcess(t *testing.T) {
	spec := ftguest.Spec{Lines: 100, Spin: 1000}
	g := bareGuest(t, chatter(t, spec), 64<<20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var pOut, bOut, logs syncBuf
	cfg := ft.Config{Guest: g, SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var bres ft.Result
	var berr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := cfg
		c.Output = &bOut
		bres, berr = ft.RunBackup(ctx, c, l.Addr().String(), 10*time.Second)
	}()
	c := cfg
	c.Output = &pOut
	pres, perr := ft.RunPrimary(ctx, c, l, 10*time.Second)
	<-done
	if perr != nil || berr != nil {
		t.Fatalf("primary %v, backup %v\n%s", perr, berr, logs.String())
	}
	if pres.Outcome != "finished protected" || bres.Live {
		t.Fatalf("outcomes: primary %q, backup %q", pres.Outcome, bres.Outcome)
	}
	if pOut.String() != ftguest.Expected(spec) || bOut.String() != "" {
		t.Fatalf("output: primary %d bytes (want %d), backup %d (want 0)", len(pOut.String()), len(ftguest.Expected(spec)), len(bOut.String()))
	}
	if pres.Commit.N != len(ftguest.Expected(spec)) {
		t.Errorf("commit delays for %d writes, want one per byte (%d)", pres.Commit.N, len(ftguest.Expected(spec)))
	}
}

// TestMismatchIsRefused: a backup built for another VM is refused in the
// handshake with ErrConfigMismatch; the primary runs on unprotected.
func TestMismatchIsRefused(t *testing.T) {
	spec := ftguest.Spec{Lines: 10, Spin: 10}
	img := chatter(t, spec)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	berrc := make(chan error, 1)
	go func() {
		cfg := ft.Config{Guest: bareGuest(t, img, 32<<20), SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1, Output: &syncBuf{}}
		_, err := ft.RunBackup(ctx, cfg, l.Addr().String(), 10*time.Second)
		berrc <- err
	}()
	var out syncBuf
	cfg := ft.Config{Guest: bareGuest(t, img, 64<<20), SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1, Output: &out}
	res, err := ft.RunPrimary(ctx, cfg, l, 2*time.Second)
	if err != nil {
		t.Fatalf("primary: %v\n%s", err, logs.String())
	}
	if berr := <-berrc; !errors.Is(berr, ft.ErrConfigMismatch) {
		t.Fatalf("backup error %v, want ErrConfigMismatch", berr)
	}
	if res.Live != true || out.String() != ftguest.Expected(spec) {
		t.Fatalf("primary %q with %d bytes of output", res.Outcome, len(out.String()))
	}
}
