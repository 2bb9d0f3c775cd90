package ft

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay/logio"
)

// pairOverTCP runs a pair over loopback TCP with mutual TLS, after
// strangers opened silent and garbage connections to the primary's port,
// and returns how long the backup took from its start to the end of the
// run.
func pairOverTCP(t *testing.T, silent, garbage int) time.Duration {
	dir := t.TempDir()
	if _, err := pairtls.Generate(dir, pairtls.Options{}); err != nil {
		t.Fatal(err)
	}
	p := newPair(t, chatterProg(10))
	var err error
	if p.pCfg.TLS, err = pairtls.Primary(dir); err != nil {
		t.Fatal(err)
	}
	if p.bCfg.TLS, err = pairtls.Backup(dir); err != nil {
		t.Fatal(err)
	}
	p.pCfg.Insecure, p.bCfg.Insecure, p.bCfg.Dial = false, false, nil
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pDone := make(chan struct{})
	go func() {
		defer close(pDone)
		p.pRes, p.pErr = RunPrimary(context.Background(), p.pCfg, l, 10*time.Second)
	}()
	for i := range silent + garbage {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i >= silent {
			c.Write([]byte(strings.Repeat("GET / HTTP/1.0\r\n\r\n", 100)))
		}
	}
	time.Sleep(50 * time.Millisecond) // the primary has them in its handshakes
	start := time.Now()
	p.bRes, p.bErr = RunBackup(context.Background(), p.bCfg, l.Addr().String(), 5*time.Second)
	took := time.Since(start)
	<-pDone
	if p.pRes.Outcome != "finished protected" || p.bErr != nil {
		t.Fatalf("with %d silent and %d garbage connections: primary %q %v, backup %q %v", silent, garbage, p.pRes.Outcome, p.pErr, p.bRes.Outcome, p.bErr)
	}
	if p.pOut.String() != output(p.prog) {
		t.Errorf("the primary let out %q", p.pOut.String())
	}
	if log := p.log.String(); garbage > 0 && !strings.Contains(log, "REFUSED a connection from") || silent > maxHandshakes && !strings.Contains(log, "dropping the oldest") {
		t.Errorf("the primary's log does not show the strangers refused and dropped:\n%s", log)
	}
	return took
}

// Strangers at the primary's port cannot stall pairing: with silent
// connections (more than the handshakes that may wait at once) and
// garbage ones, the real backup pairs and the run ends as quickly as
// without them, far within one pre-authentication deadline.
func TestPairingStrangersCannotStall(t *testing.T) {
	alone := pairOverTCP(t, 0, 0)
	crowded := pairOverTCP(t, maxHandshakes+4, 5)
	t.Logf("backup paired and ran in %v alone, %v among strangers", alone, crowded)
	if crowded > alone+time.Second || crowded > preAuthTimeout/2 {
		t.Errorf("among strangers the backup took %v (alone %v)", crowded, alone)
	}
}

// hostileEntry is a marshalled logpb.Event whose Deliver holds n empty
// Dma messages: 2 bytes each on the wire, a struct and a slice slot each
// once decoded.
func hostileEntry(n int) []byte {
	var deliver []byte
	for range n {
		deliver = protowire.AppendTag(deliver, 4, protowire.BytesType) // Deliver.dma
		deliver = protowire.AppendVarint(deliver, 0)
	}
	var ev []byte
	ev = protowire.AppendTag(ev, 1, protowire.VarintType) // Event.seq
	ev = protowire.AppendVarint(ev, 1)
	ev = protowire.AppendTag(ev, 4, protowire.BytesType) // Event.deliver
	return protowire.AppendBytes(ev, deliver)
}

// fakePrimary plays a primary to a backup over a pipe: it sends the
// hello and then the given entries.
func fakePrimary(t *testing.T, cfg Config, hash [32]byte, hl []byte, entries ...[]byte) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		a, b := logchannel.NewPipe(0)
		go func() {
			s, err := logchannel.NewSender(ctx, a, cfg.channel(hash))
			if err != nil {
				t.Errorf("fake primary: %v", err)
				return
			}
			defer s.Close()
			for _, e := range append([][]byte{hl}, entries...) {
				if _, err := s.Append(ctx, e); err != nil {
					return
				}
			}
			s.Flush(ctx)
			<-ctx.Done()
		}()
		return b, nil
	}
}

// A primary's entries within the window that would decode to far more
// than their size are refused before they are decoded, the hello's log
// header included.
func TestBackupRefusesAmplifyingEntries(t *testing.T) {
	g := &toyGuest{prog: chatterProg(3)}
	hdr := g.header(time.Unix(0, 0))
	hash, err := configHash(hdr)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := proto.Marshal(hdr)
	goodHello, _ := json.Marshal(hello{Header: hb, Generation: 1, Pair: "toy", Primary: "fake"})
	// A header of 4 Mi empty device names, 8 MiB (12 MiB in the hello's
	// JSON), within a 64 MiB window.
	var bad []byte
	bad = append(bad, hb...)
	for range 4 << 20 {
		bad = protowire.AppendTag(bad, 12, protowire.BytesType) // Header.devices
		bad = protowire.AppendVarint(bad, 0)
	}
	badHello, _ := json.Marshal(hello{Header: bad, Generation: 1, Pair: "toy", Primary: "fake"})
	for _, c := range []struct {
		name    string
		window  int
		entries [][]byte
		want    string
	}{
		{"entry", 16 << 20, [][]byte{goodHello, hostileEntry((8<<20 - 64) / 2)}, "log entry 2: refused before decoding"},
		{"hello", 64 << 20, [][]byte{badHello}, "the primary's log header: refused before decoding"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := Config{Insecure: true, NewMachine: g.factory, Output: &world{}, Log: &syncBuf{}, StatusEvery: -1, WindowBytes: c.window,
				SplitDir: t.TempDir()}
			cfg.Dial = fakePrimary(t, cfg, hash, c.entries[0], c.entries[1:]...)
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			res, err := RunBackup(ctx, cfg, "fake", time.Second)
			runtime.ReadMemStats(&ms1)
			alloc := ms1.TotalAlloc - ms0.TotalAlloc
			t.Logf("%s: %v; %d MiB allocated", res.Outcome, err, alloc>>20)
			if !errors.Is(err, logio.ErrTooLarge) || !strings.Contains(err.Error(), c.want) || res.Live {
				t.Fatalf("err = %v (live %v), want %q wrapping logio.ErrTooLarge", err, res.Live, c.want)
			}
			if alloc > 160<<20 {
				t.Errorf("the backup allocated %d MiB refusing it", alloc>>20)
			}
		})
	}
}

// A backup lost between the handshake and its ack of the hello does not
// leave the primary waiting for that ack for as long as its context
// lasts.
func TestPrimaryBackupLostBeforeHello(t *testing.T) {
	p := newPair(t, chatterProg(3))
	hash, err := configHash(p.pg.header(time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	bcfg := p.bCfg
	bcfg.defaults("backup")
	a, b := logchannel.NewPipe(0)
	go func() {
		lc := bcfg.channel(hash)
		lc.AckMode = logchannel.AckConsumed // never acks: nothing is consumed
		r, err := logchannel.NewReceiver(context.Background(), b, lc)
		if err != nil {
			t.Errorf("fake backup: %v", err)
			return
		}
		time.Sleep(50 * time.Millisecond) // the hello arrives, unacknowledged
		r.Close()
	}()
	go func() { p.l.conns <- a }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = RunPrimary(ctx, p.pCfg, p.l, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "sending the hello") || time.Since(start) > 5*time.Second {
		t.Errorf("after %v: %v, want the hello's failure at once", time.Since(start), err)
	}
}
