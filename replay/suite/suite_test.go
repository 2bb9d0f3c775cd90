package suite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio/blk"
	vnet "github.com/ftkvm/ftkvm/devices/virtio/net"
	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

const memBytes = 16 << 20

func requireKVM(t *testing.T) {
	t.Helper()
	kvmtest.Require(t)
}

// guest is a bare test guest with its rdtsc sites patched.
type guest struct {
	name   string
	image  []byte
	sites  *tscpatch.SiteTable
	n      int
	dma    bool // has the DMA test device (vmm.AddDMATest)
	virtio bool // has a virtio-blk disk (blk.Attachment, testDisk)
	net    bool // has a virtio-net interface (vnet.Attachment) on a link to an echoPeer
}

func load(t *testing.T, name string) guest {
	t.Helper()
	img, err := bare.Build(name)
	if err != nil {
		t.Fatal(err)
	}
	g := guest{name: name, image: img.Binary, dma: name == "dma", virtio: name == "virtio_hostile", net: name == "virtio_net_hostile"}
	p, err := tscpatch.PrepareFlat(img.Binary, vmm.BareLoadAddr)
	if err != nil {
		t.Fatal(err)
	}
	g.image, g.sites, g.n = p.Image, p.Table, len(p.Sites)
	return g
}

// diskBytes is the size of the virtio guests' disk.
const diskBytes = 64 << 10

// testDisk returns a backend serving a fresh disk of diskBytes in
// t.TempDir() whose byte o is (o mod 256) xor (o/512 mod 256): each sector
// differs, and virtio_hostile checks what it reads against this.
func testDisk(t *testing.T) *blk.FileBackend {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "disk-*.img")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b := make([]byte, diskBytes)
	for o := range b {
		b[o] = byte(o) ^ byte(o/blk.SectorSize)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	fb, err := blk.NewFileBackend(f)
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

type recording struct {
	events      []*logpb.Event
	console     string
	fingerprint [32]byte
	stats       replay.RecordStats
	res         vmm.Result
	net         *netRecord // a guest with a virtio-net interface
}

// netRecord is what a recording's virtio-net interface did.
type netRecord struct {
	stats  vnet.Stats
	frames [][]byte // every frame the guest sent, as its peer got them
	faults []string // vm.VirtioFaults at the end
}

// guestMAC is the virtio-net guests' MAC; virtio_net_hostile checks its
// config space against it.
var guestMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}

// isEcho reports whether frame is one virtio_net_hostile wants sent back:
// 60 bytes, ethertype 0x88b5 (local experimental), kind (byte 14) 'E'
// (at once) or 'L' (late).
func isEcho(frame []byte) bool {
	return len(frame) == 60 && frame[12] == 0x88 && frame[13] == 0xb5 && (frame[14] == 'E' || frame[14] == 'L')
}

// lateEcho is how long the echo peer holds a frame of kind 'L': far
// longer than the guest's re-init after a reset, so the echo crosses it.
const lateEcho = 50 * time.Millisecond

// echoPeer is the far end of a virtio-net guest's link during a
// recording: it keeps every frame the guest sends and sends each echo
// frame back as kind 'R' (a late one after lateEcho). A replay never
// reaches it: the echoes come from the log.
type echoPeer struct {
	end    *vnet.Endpoint
	done   chan struct{}
	frames [][]byte // owned by the peer's goroutine until done
}

func startEchoPeer(end *vnet.Endpoint) *echoPeer {
	p := &echoPeer{end: end, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			f, err := end.Recv()
			if err != nil {
				return // the link is closed
			}
			p.frames = append(p.frames, f)
			if isEcho(f) {
				if f[14] == 'L' {
					time.Sleep(lateEcho)
				}
				r := bytes.Clone(f)
				r[14] = 'R'
				end.Send(r)
			}
		}
	}()
	return p
}

// stop closes the link and returns the frames the peer got. It can be
// called again.
func (p *echoPeer) stop() [][]byte {
	p.end.Close()
	<-p.done
	return p.frames
}

func record(t *testing.T, g guest, input string, rng *rand.Rand) recording {
	t.Helper()
	requireKVM(t)
	log := &replay.MemLog{}
	cfg := replay.RecorderConfig{
		Sink:             log,
		KickAfter:        time.Duration(rng.IntN(3000)+1) * time.Microsecond,
		FingerprintEvery: uint64(rng.IntN(200) + 50),
	}
	if input != "" {
		cfg.Input = strings.NewReader(input)
	}
	rec, err := replay.NewRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	vm, err := vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: memBytes, TSCSites: g.sites}, Options: vmm.Options{Console: &out, Driver: rec}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.LoadBare(g.image); err != nil {
		t.Fatal(err)
	}
	if g.dma {
		// A backend with random delays and random data: only the log
		// can make the replay's memory match.
		seed := rng.Uint64()
		if _, err := vm.AddDMATest(func(req bounce.Request) ([]byte, error) {
			r := rand.New(rand.NewPCG(seed, req.Tag))
			time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
			b := make([]byte, req.Len)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			return b, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var netDev *vnet.Device
	var peer *echoPeer
	if g.net {
		devEnd, peerEnd := vnet.NewLink()
		peer = startEchoPeer(peerEnd)
		defer peer.stop() // also unblocks the device's standing receive
		dev, err := vm.AddVirtio(vnet.Attachment(vnet.Config{MAC: guestMAC}, devEnd.Backend()))
		if err != nil {
			t.Fatal(err)
		}
		netDev = dev.(*vnet.Device)
	}
	if g.virtio {
		disk := testDisk(t)
		if _, err := vm.AddVirtio(blk.Attachment(blk.Config{Capacity: disk.Capacity()}, disk.Backend(), blk.DiskOptions{})); err != nil {
			t.Fatal(err)
		}
	}
	stop := busyCore()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	res, err := vm.Run(ctx)
	cancel()
	stop()
	if err != nil {
		t.Fatalf("recording %s: %v", g.name, err)
	}
	fp, err := vm.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	r := recording{events: log.Events, console: out.String(), fingerprint: fp, stats: rec.Stats(), res: res}
	if g.net {
		// The guest waited for the echo of each frame it sent, so the
		// peer has them all.
		r.net = &netRecord{stats: netDev.Stats(), frames: peer.stop(), faults: vm.VirtioFaults()}
	}
	return r
}

type replayed struct {
	console     string
	fingerprint [32]byte
	stats       replay.ReplayStats
	err         error
	netStats    *vnet.Stats // a guest with a virtio-net interface
}

func replayEvents(t *testing.T, g guest, src replay.Source) replayed {
	t.Helper()
	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	vm, err := vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: memBytes, TSCSites: g.sites}, Options: vmm.Options{Console: &out, Driver: rp}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.LoadBare(g.image); err != nil {
		t.Fatal(err)
	}
	if g.dma {
		if _, err := vm.AddDMATest(func(bounce.Request) ([]byte, error) {
			t.Error("the replay called the DMA backend")
			return nil, errors.New("replay must not read a backend")
		}); err != nil {
			t.Fatal(err)
		}
	}
	if g.virtio {
		// The same disk, but a replay takes every read from the log and
		// performs no writes (no DiskOptions.OwnCopy).
		if _, err := vm.AddVirtio(blk.Attachment(blk.Config{Capacity: diskBytes}, func(bounce.Request) ([]byte, error) {
			t.Error("the replay called the virtio-blk backend")
			return nil, errors.New("replay must not read a backend")
		}, blk.DiskOptions{})); err != nil {
			t.Fatal(err)
		}
	}
	var netDev *vnet.Device
	if g.net {
		// Received frames come from the log; sent ones go nowhere.
		dev, err := vm.AddVirtio(vnet.Attachment(vnet.Config{MAC: guestMAC}, func(bounce.Request) ([]byte, error) {
			t.Error("the replay called the virtio-net backend")
			return nil, errors.New("replay must not touch the network")
		}))
		if err != nil {
			t.Fatal(err)
		}
		netDev = dev.(*vnet.Device)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err = vm.Run(ctx)
	fp, _ := vm.Fingerprint()
	r := replayed{console: out.String(), fingerprint: fp, stats: rp.Stats(), err: err}
	if g.net {
		st := netDev.Stats()
		r.netStats = &st
	}
	return r
}

// TestReplayReachesRecordedState is the suite's core: every guest,
// recorded under random host timing, replays to the recorded state,
// twice.
func TestReplayReachesRecordedState(t *testing.T) {
	cases := []struct {
		guest, input string
		want         string // console must contain it
		minLandmarks uint64
		minTSC       uint64
		wantExit     bool // the guest must end with exit status 0
	}{
		{guest: "spin_repeat", want: "spin_repeat: spins=", minLandmarks: 1},
		{guest: "rep_movs", want: "rep_movs: sum=", minLandmarks: 1},
		{guest: "pit_read", want: "pit_read: sum="},
		{guest: "rdtsc_loop", want: "rdtsc_loop: sum=", minTSC: 4000},
		{guest: "uart_irq", input: "replay me\n", want: "REPLAY ME\n"},
		{guest: "hostile"},
		{guest: "dma", want: "dma: checksum ", minLandmarks: 1},
		{guest: "msr_tsc", want: "msr_tsc: sum="},
		{guest: "virtio_hostile", want: "virtio_hostile: all ok\n", wantExit: true},
		{guest: "virtio_net_hostile", want: "virtio_net_hostile: all ok, ", wantExit: true},
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d (set FTKVM_SUITE_SEED to repeat)", seed)
	if s := os.Getenv("FTKVM_SUITE_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for _, c := range cases {
		t.Run(c.guest, func(t *testing.T) {
			g := load(t, c.guest)
			rec := record(t, g, c.input, rng)
			t.Logf("recorded %d events (%d landmarks, %d injections, %d rdtsc, %d clock, %d fingerprints) in %v; console %q",
				len(rec.events), rec.stats.Landmarks, rec.stats.Injects, rec.stats.TSC, rec.stats.Clock, rec.stats.Fingerprints, rec.res.Duration, rec.console)
			if !strings.Contains(rec.console, c.want) {
				t.Fatalf("recording's console %q lacks %q", rec.console, c.want)
			}
			if c.wantExit && (rec.res.Reason != vmm.StopExitPort || rec.res.Status != 0) {
				t.Fatalf("recording ended by %v with status %d, want exit status 0", rec.res.Reason, rec.res.Status)
			}
			if g.net {
				checkNetHostile(t, rec)
			}
			if rec.stats.Landmarks < c.minLandmarks {
				t.Errorf("only %d landmarks: the test no longer exercises injection between exits", rec.stats.Landmarks)
			}
			if rec.stats.TSC < c.minTSC {
				t.Errorf("only %d trapped rdtsc (want %d): patching missed sites (%d patched)", rec.stats.TSC, c.minTSC, g.n)
			}
			for i := 0; i < 2; i++ {
				r := replayEvents(t, g, &replay.MemLog{Events: rec.events})
				if r.err != nil {
					t.Fatalf("replay %d: %v", i+1, r.err)
				}
				if r.fingerprint != rec.fingerprint {
					t.Fatalf("replay %d ended in state %x, recording in %x", i+1, r.fingerprint, rec.fingerprint)
				}
				if r.console != rec.console {
					t.Fatalf("replay %d console %q, recorded %q", i+1, r.console, rec.console)
				}
				if g.net && *r.netStats != rec.net.stats {
					t.Fatalf("replay %d: virtio-net counters %+v, recorded %+v", i+1, *r.netStats, rec.net.stats)
				}
				t.Logf("replay %d: %d landmarks loaded with %d pages", i+1, r.stats.Landmarks, r.stats.LandmarkPages)
			}
		})
	}
}

// writeLog encodes a recording as a log file.
func writeLog(t *testing.T, g guest, rec recording) []byte {
	t.Helper()
	var buf bytes.Buffer
	sum := sha256.Sum256(g.image)
	w, err := logio.NewWriter(&buf, &logpb.Header{Version: logio.FormatVersion, MemoryBytes: memBytes, ImageSha256: sum[:]})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range rec.events {
		if err := w.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func replayFile(t *testing.T, g guest, file []byte) replayed {
	t.Helper()
	r, err := logio.NewReader(bytes.NewReader(file))
	if err != nil {
		return replayed{err: err}
	}
	return replayEvents(t, g, r)
}

// TestDamagedLogsAreRefused: corruption, truncation and reordering of a
// log file each end the replay with an error naming the damage.
func TestDamagedLogsAreRefused(t *testing.T) {
	g := load(t, "pit_read")
	rec := record(t, g, "", rand.New(rand.NewPCG(1, 2)))
	file := writeLog(t, g, rec)
	if r := replayFile(t, g, file); r.err != nil || r.fingerprint != rec.fingerprint {
		t.Fatalf("intact log: %v", r.err)
	}

	corrupt := bytes.Clone(file)
	corrupt[len(corrupt)/2] ^= 0x40
	r := replayFile(t, g, corrupt)
	if !errors.Is(r.err, logio.ErrCorrupt) {
		t.Errorf("corrupted log: err = %v, want ErrCorrupt", r.err)
	}

	r = replayFile(t, g, file[:len(file)*2/3])
	if !errors.Is(r.err, logio.ErrTruncated) && !errors.Is(r.err, replay.ErrDiverged) {
		t.Errorf("truncated log: err = %v, want a truncation or divergence error", r.err)
	}

	// Reordered: swap two events and renumber them, so the file itself is
	// well-formed; the replay must notice the inputs arrive out of place.
	events := make([]*logpb.Event, len(rec.events))
	for i, ev := range rec.events {
		events[i] = &logpb.Event{Seq: ev.Seq, Exits: ev.Exits, Kind: ev.Kind}
	}
	i := len(events) / 2
	for events[i].Exits == events[i+1].Exits {
		i++
	}
	events[i].Kind, events[i+1].Kind = events[i+1].Kind, events[i].Kind
	r = replayEvents(t, g, &replay.MemLog{Events: events})
	if !errors.Is(r.err, replay.ErrDiverged) {
		t.Errorf("reordered log: err = %v, want a divergence", r.err)
	}
	t.Logf("reordered: %v", r.err)
}

// TestTamperedInputIsCaught changes one recorded clock value: the file is
// valid, but the replay must not end in a silent success.
func TestTamperedInputIsCaught(t *testing.T) {
	g := load(t, "pit_read")
	rec := record(t, g, "", rand.New(rand.NewPCG(3, 4)))
	events := make([]*logpb.Event, len(rec.events))
	tampered := false
	for i, ev := range rec.events {
		events[i] = ev
		if c, ok := ev.Kind.(*logpb.Event_Clock); ok && !tampered && i > len(rec.events)/3 {
			events[i] = &logpb.Event{Seq: ev.Seq, Exits: ev.Exits, Kind: &logpb.Event_Clock{Clock: c.Clock + 7919}}
			tampered = true
		}
	}
	if !tampered {
		t.Fatal("no clock event to tamper with")
	}
	r := replayEvents(t, g, &replay.MemLog{Events: events})
	if !errors.Is(r.err, replay.ErrDiverged) {
		t.Fatalf("tampered clock: err = %v (console %q), want a divergence", r.err, r.console)
	}
	t.Logf("tampered clock: %v", r.err)
}

// TestForeignLogIsRefused: a log recorded with another guest image, or
// another CPUID table, does not replay.
func TestForeignLogIsRefused(t *testing.T) {
	a, b := load(t, "pit_read"), load(t, "rdtsc_loop")
	sa, sb := sha256.Sum256(a.image), sha256.Sum256(b.image)
	recorded := &logpb.Header{Version: 1, MemoryBytes: memBytes, ImageSha256: sa[:], CpuidSha256: []byte{1}}
	if err := logio.CompareHeaders(recorded, &logpb.Header{Version: 1, MemoryBytes: memBytes, ImageSha256: sb[:], CpuidSha256: []byte{1}}); !errors.Is(err, logio.ErrConfigMismatch) || !strings.Contains(err.Error(), "image") {
		t.Errorf("other image: %v", err)
	}
	if err := logio.CompareHeaders(recorded, &logpb.Header{Version: 1, MemoryBytes: memBytes, ImageSha256: sa[:], CpuidSha256: []byte{2}}); !errors.Is(err, logio.ErrConfigMismatch) || !strings.Contains(strings.ToLower(err.Error()), "cpuid") {
		t.Errorf("other CPUID: %v", err)
	}
	// Replaying pit_read's events on rdtsc_loop (bypassing the header
	// check) diverges at once.
	rec := record(t, a, "", rand.New(rand.NewPCG(5, 6)))
	if r := replayEvents(t, b, &replay.MemLog{Events: rec.events}); !errors.Is(r.err, replay.ErrDiverged) {
		t.Errorf("foreign events: err = %v, want a divergence", r.err)
	}
}

// checkNetHostile checks a recording of virtio_net_hostile against what
// its peer got and the device counted. The guest sent echo frames seq
// 1..n (n from its last line) and nothing else may reach the wire: not
// the chains it pointed outside RAM, nor the ones the device must refuse
// (short, long, offloads, writable), while the frame in flight across
// step 6's reset must. The counters follow from the steps: 7 transmit
// chains dropped (step 8), 2 receive buffers refused (step 8), an echo
// that found a broken receive ring for step 3 and each of step 4's 3
// buffers, plus each of step 6's two echoes that crossed the reset into
// no driver.
func checkNetHostile(t *testing.T, rec recording) {
	t.Helper()
	const mark = "virtio_net_hostile: all ok, "
	i := strings.Index(rec.console, mark)
	var n uint64
	if i < 0 {
		t.Fatalf("console %q lacks %q", rec.console, mark)
	}
	if _, err := fmt.Sscanf(rec.console[i+len(mark):], "%d", &n); err != nil || n < 19 {
		t.Fatalf("console %q: echo frames %d (%v), want at least 19", rec.console, n, err)
	}
	nr := rec.net
	if uint64(len(nr.frames)) != n {
		t.Errorf("the peer got %d frames, the guest sent %d echo frames", len(nr.frames), n)
	}
	for i, f := range nr.frames {
		if !isEcho(f) || f[15] != byte(i+1) {
			t.Errorf("frame %d on the wire (%d bytes) begins % x, want echo frame seq %d", i, len(f), f[:min(len(f), 16)], i+1)
		}
	}
	noBuffer := 4 + uint64(strings.Count(rec.console, " across the reset was dropped"))
	want := vnet.Stats{TxFrames: n, TxDropped: 7, RxBadBuffer: 2, RxNoBuffer: noBuffer, RxFrames: n - 2 - noBuffer}
	if nr.stats != want {
		t.Errorf("virtio-net counters %+v, want %+v", nr.stats, want)
	}
	if len(nr.faults) != 1 || nr.faults[0] != "" {
		t.Errorf("virtio faults at the end %q, want one device, working", nr.faults)
	}
	t.Logf("virtio-net: %d frames on the wire, counters %+v", len(nr.frames), nr.stats)
}
