package ft_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftguest"
	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"github.com/ftkvm/ftkvm/logchannel"
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

// pairCerts makes a pair's certificates (pairtls.Generate, as `ftvm
// certs` does) and returns the primary's and the backup's TLS configs.
func pairCerts(t *testing.T) (primary, backup ft.Config) {
	t.Helper()
	dir := t.TempDir()
	if _, err := pairtls.Generate(dir, pairtls.Options{}); err != nil {
		t.Fatal(err)
	}
	var err error
	if primary.TLS, err = pairtls.Primary(dir); err != nil {
		t.Fatal(err)
	}
	if backup.TLS, err = pairtls.Backup(dir); err != nil {
		t.Fatal(err)
	}
	return primary, backup
}

// withTLS returns cfg with the TLS config of sec.
func withTLS(cfg, sec ft.Config) ft.Config {
	cfg.TLS, cfg.Insecure = sec.TLS, sec.Insecure
	return cfg
}

// TestPairInProcess runs both sides in one process, as a VMM embedding
// the package could: the primary's released output is the guest's, the
// backup follows to the end and prints nothing. With mutual TLS, and
// once in plaintext (Insecure) to show that still works.
func TestPairInProcess(t *testing.T) {
	spec := ftguest.Spec{Lines: 100, Spin: 1000}
	g := bareGuest(t, chatter(t, spec), 64<<20)
	pTLS, bTLS := pairCerts(t)
	insecure := ft.Config{Insecure: true}
	for _, c := range []struct {
		name string
		p, b ft.Config
		log  string
	}{{"tls", pTLS, bTLS, "(mutual TLS 1.3)"}, {"insecure", insecure, insecure, "UNAUTHENTICATED"}} {
		t.Run(c.name, func(t *testing.T) {
			runPairInProcess(t, g, spec, c.p, c.b, c.log)
		})
	}
}

func runPairInProcess(t *testing.T, g ft.Guest, spec ftguest.Spec, pSec, bSec ft.Config, wantLog string) {
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
		c := withTLS(cfg, bSec)
		c.Output = &bOut
		bres, berr = ft.RunBackup(ctx, c, l.Addr().String(), 10*time.Second)
	}()
	c := withTLS(cfg, pSec)
	c.Output = &pOut
	pres, perr := ft.RunPrimary(ctx, c, l, 10*time.Second)
	<-done
	if perr != nil || berr != nil {
		t.Fatalf("primary %v, backup %v\n%s", perr, berr, logs.String())
	}
	if !strings.Contains(logs.String(), "backup connected from 127.0.0.1") || !strings.Contains(logs.String(), wantLog) {
		t.Errorf("the primary did not log the connection as %q:\n%s", wantLog, logs.String())
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
	pTLS, bTLS := pairCerts(t)
	go func() {
		cfg := ft.Config{Guest: bareGuest(t, img, 32<<20), SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1, Output: &syncBuf{}, TLS: bTLS.TLS}
		_, err := ft.RunBackup(ctx, cfg, l.Addr().String(), 10*time.Second)
		berrc <- err
	}()
	var out syncBuf
	cfg := ft.Config{Guest: bareGuest(t, img, 64<<20), SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1, Output: &out, TLS: pTLS.TLS}
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

// TestForeignBackupRefused: a backup whose certificate comes from another
// pair's CA, and a plaintext one, are refused in the TLS handshake (the
// backup fails with logchannel.ErrAuth, the primary logs REFUSED) and the
// primary runs on unprotected.
func TestForeignBackupRefused(t *testing.T) {
	spec := ftguest.Spec{Lines: 10, Spin: 10}
	g := bareGuest(t, chatter(t, spec), 32<<20)
	pTLS, _ := pairCerts(t)
	_, rogue := pairCerts(t)
	for _, c := range []struct {
		name   string
		backup ft.Config
	}{{"other CA", rogue}, {"plaintext", ft.Config{Insecure: true}}} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuf
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			berrc := make(chan error, 1)
			go func() {
				cfg := withTLS(ft.Config{Guest: g, SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1, Output: &syncBuf{}}, c.backup)
				_, err := ft.RunBackup(ctx, cfg, l.Addr().String(), 10*time.Second)
				berrc <- err
			}()
			var out syncBuf
			cfg := withTLS(ft.Config{Guest: g, SplitDir: t.TempDir(), Log: &logs, StatusEvery: -1, Output: &out}, pTLS)
			res, err := ft.RunPrimary(ctx, cfg, l, 3*time.Second)
			if err != nil {
				t.Fatalf("primary: %v\n%s", err, logs.String())
			}
			berr := <-berrc
			t.Logf("backup: %v", berr)
			if berr == nil || (c.name == "other CA" && !errors.Is(berr, logchannel.ErrAuth)) {
				t.Fatalf("backup error %v, want ErrAuth", berr)
			}
			if !strings.Contains(logs.String(), "REFUSED a connection from") {
				t.Errorf("the primary did not log the refusal:\n%s", logs.String())
			}
			if !res.Live || !strings.HasPrefix(res.Outcome, "finished unprotected") || out.String() != ftguest.Expected(spec) {
				t.Fatalf("primary %q with %d bytes of output", res.Outcome, len(out.String()))
			}
		})
	}
}

// TestPairNeedsTLS: without TLS and without Insecure neither side starts.
func TestPairNeedsTLS(t *testing.T) {
	ctx := context.Background()
	if _, err := ft.RunPrimary(ctx, ft.Config{}, nil, 0); !errors.Is(err, ft.ErrNoTLS) {
		t.Errorf("RunPrimary without TLS: %v, want ErrNoTLS", err)
	}
	if _, err := ft.RunBackup(ctx, ft.Config{}, "127.0.0.1:1", 0); !errors.Is(err, ft.ErrNoTLS) {
		t.Errorf("RunBackup without TLS: %v, want ErrNoTLS", err)
	}
	p, _ := pairCerts(t)
	p.Insecure = true
	if _, err := ft.RunPrimary(ctx, p, nil, 0); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Errorf("RunPrimary with TLS and Insecure: %v", err)
	}
}
