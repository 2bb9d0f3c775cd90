package blk

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

const testCapacity = 2 << 20 // 4096 sectors

func newTestGuest(t *testing.T, cfg Config) (*guest, *memDisk) {
	t.Helper()
	if cfg.Capacity == 0 {
		cfg.Capacity = testCapacity
	}
	disk := &memDisk{img: make([]byte, cfg.Capacity), fail: map[uint64]bool{}}
	return newGuest(t, cfg, replayEngine(t), 64), disk
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestNewRefusesBadConfigs(t *testing.T) {
	e := replayEngine(t)
	for _, cfg := range []Config{
		{Capacity: 1000},
		{Capacity: MaxCapacity + SectorSize},
		{Capacity: 512, ID: strings.Repeat("x", IDLen+1)},
	} {
		if _, err := New(cfg, e); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if _, err := New(Config{Capacity: 512}, nil); err == nil {
		t.Error("no engine accepted")
	}
}

func TestFeaturesAndConfigSpace(t *testing.T) {
	g, _ := newTestGuest(t, Config{Capacity: 3 << 20})
	if id := g.ReadReg(0x008); id != DeviceID {
		t.Errorf("device ID %d", id)
	}
	g.WriteReg(virtio.RegDeviceFeaturesSel, 0)
	want := uint32(FeatureSizeMax | FeatureSegMax | FeatureBlkSize | FeatureFlush)
	if f := g.ReadReg(virtio.RegDeviceFeatures); f != want {
		t.Errorf("features %#x, want %#x", f, want)
	}
	if got := g.MMIO.DriverFeatures(); got != uint64(want)|virtio.FeatureVersion1 {
		t.Errorf("negotiated %#x", got)
	}
	cfg := g.ReadConfig
	for _, c := range []struct {
		name string
		off  uint64
		n    int
		want uint64
	}{
		{"capacity low", 0, 4, 6144},
		{"capacity high", 4, 4, 0},
		{"capacity byte", 1, 1, 6144 >> 8},
		{"size_max", 8, 4, SizeMax},
		{"seg_max", 12, 4, SegMax},
		{"geometry", 16, 4, 0},
		{"blk_size", 20, 4, 512},
		{"blk_size half", 22, 2, 0},
		{"past the config", 24, 4, 0},
		{"far past", 0xfc, 4, 0},
	} {
		if got := cfg(c.off, c.n); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	g.MMIO.Write(virtio.ConfigOffset, []byte{1, 2, 3, 4}) // read-only: ignored
	if got := cfg(0, 4); got != 6144 {
		t.Errorf("capacity after a write: %d", got)
	}
	if g.dev.NumQueues() != 1 || g.dev.QueueMax(0) != QueueMax || g.dev.Config().Capacity != 3<<20 {
		t.Error("queue layout or config")
	}

	ro, _ := newTestGuest(t, Config{ReadOnly: true})
	ro.WriteReg(virtio.RegDeviceFeaturesSel, 0)
	if f := ro.ReadReg(virtio.RegDeviceFeatures); f&FeatureRO == 0 {
		t.Errorf("read-only device features %#x lack VIRTIO_BLK_F_RO", f)
	}
}

func TestWriteThenRead(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	data := pattern(4096, 3)
	w := g.write(10, data)
	g.notify()
	if tags := inflightTags(g.dev); len(tags) != 1 {
		t.Fatalf("in flight %v, want one write", tags)
	}
	if sub := g.dev.inflight[1]; sub.Op != OpWrite || sub.Offset != 10*512 || !bytes.Equal(sub.Data, data) {
		t.Fatalf("submitted %+v", sub)
	}
	g.Collect()
	if w.Done {
		t.Fatal("write completed before its transfer")
	}
	rises := g.Rises
	g.complete(disk, 1)
	if st := g.status(w); st != StatusOK || w.Written != 1 {
		t.Fatalf("write: status %d, written %d", st, w.Written)
	}
	if g.Rises != rises+1 {
		t.Errorf("completion raised %d interrupts, want 1", g.Rises-rises)
	}
	if !bytes.Equal(disk.img[5120:5120+4096], data) {
		t.Fatal("disk does not hold the data")
	}

	r := g.read(10, 4096)
	g.notify()
	g.complete(disk, 2)
	if st := g.status(r); st != StatusOK || r.Written != 4097 {
		t.Fatalf("read: status %d, written %d", st, r.Written)
	}
	if !bytes.Equal(g.data(r), data) {
		t.Fatal("read data differs from what was written")
	}
}

func TestFlushAndGetID(t *testing.T) {
	g, disk := newTestGuest(t, Config{ID: "ftkvm-disk-0"})
	f := g.flush()
	g.notify()
	if sub := g.dev.inflight[1]; sub == nil || sub.Op != OpFlush {
		t.Fatalf("flush not submitted: %v", inflightTags(g.dev))
	}
	g.complete(disk, 1)
	if st := g.status(f); st != StatusOK || f.Written != 1 {
		t.Fatalf("flush: status %d written %d", st, f.Written)
	}

	id := g.post(seg{N: 16, Fill: header(TypeGetID, 0)}, seg{N: IDLen, Writable: true, Fill: bytes.Repeat([]byte{0xee}, IDLen)}, seg{N: 1, Writable: true})
	id.dataAddr, id.dataLen = id.Segs[1].Addr, IDLen
	short := g.post(seg{N: 16, Fill: header(TypeGetID, 0)}, seg{N: 6, Writable: true})
	short.dataAddr, short.dataLen = short.Segs[1].Addr, 5
	g.notify()
	if st := g.status(id); st != StatusOK || id.Written != IDLen+1 {
		t.Fatalf("get-id: status %d written %d", st, id.Written)
	}
	want := append([]byte("ftkvm-disk-0"), make([]byte, IDLen-12)...)
	if got := g.data(id); !bytes.Equal(got, want) {
		t.Errorf("id %q, want %q", got, want)
	}
	if st := g.status(short); st != StatusOK || short.Written != 6 || string(g.data(short)) != "ftkvm" {
		t.Errorf("short get-id: status %d written %d data %q", st, short.Written, g.data(short))
	}
}

// Any descriptor layout carries the same request (virtio 1.x).
func TestAnyLayout(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	copy(disk.img[512:], pattern(1024, 9))
	h := header(TypeIn, 1)
	r := g.post(seg{N: 5, Fill: h[:5]}, seg{N: 11, Fill: h[5:]}, seg{N: 100, Writable: true}, seg{N: 925, Writable: true})
	a2, a3 := r.Segs[2].Addr, r.Segs[3].Addr
	g.notify()
	g.complete(disk, 1)
	g.Collect()
	if !r.Done || r.Written != 1025 {
		t.Fatalf("done %v written %d", r.Done, r.Written)
	}
	got := append(slices.Clone(g.Mem(a2, 100)), g.Mem(a3, 924)...)
	if !bytes.Equal(got, pattern(1024, 9)) || g.Mem(a3+924, 1)[0] != StatusOK {
		t.Fatal("split read: wrong data or status")
	}

	wdata := pattern(512, 1)
	hw := header(TypeOut, 7)
	w := g.post(seg{N: 20, Fill: append(hw, wdata[:4]...)}, seg{N: 508, Fill: wdata[4:]}, seg{N: 1, Writable: true})
	g.notify()
	g.complete(disk, 2)
	if st := g.status(w); st != StatusOK || !bytes.Equal(disk.img[7*512:8*512], wdata) {
		t.Fatalf("split write: status %d", st)
	}
}

func TestMalformedRequestsCompleteAtOnce(t *testing.T) {
	in := func(sector uint64) []byte { return header(TypeIn, sector) }
	status := seg{N: 1, Writable: true, Fill: []byte{0xff}}
	for _, c := range []struct {
		name    string
		ro      bool
		segs    []seg
		status  int // -1: no status byte, written 0
		written uint32
	}{
		{"short header", false, []seg{{N: 8, Fill: in(0)}, status}, StatusIOErr, 1},
		{"no header", false, []seg{status}, StatusIOErr, 1},
		{"no status byte", false, []seg{{N: 16, Fill: in(0)}}, -1, 0},
		{"empty writable", false, []seg{{N: 16, Fill: in(0)}, {N: 0, Writable: true}}, -1, 0},
		{"readable data for IN", false, []seg{{N: 16, Fill: in(0)}, {N: 512}, {N: 513, Writable: true}}, StatusIOErr, 1},
		{"writable data for OUT", false, []seg{{N: 16, Fill: header(TypeOut, 0)}, {N: 512}, {N: 513, Writable: true}}, StatusIOErr, 1},
		{"misaligned IN", false, []seg{{N: 16, Fill: in(0)}, {N: 100, Writable: true}, status}, StatusIOErr, 1},
		{"misaligned OUT", false, []seg{{N: 16, Fill: header(TypeOut, 0)}, {N: 600}, status}, StatusIOErr, 1},
		{"sector past the end", false, []seg{{N: 16, Fill: in(4096)}, {N: 512, Writable: true}, status}, StatusIOErr, 1},
		{"range past the end", false, []seg{{N: 16, Fill: in(4095)}, {N: 1024, Writable: true}, status}, StatusIOErr, 1},
		{"sector overflowing", false, []seg{{N: 16, Fill: in(1<<55 + 1)}, {N: 512, Writable: true}, status}, StatusIOErr, 1},
		{"sector max", false, []seg{{N: 16, Fill: in(^uint64(0))}, {N: 512, Writable: true}, status}, StatusIOErr, 1},
		{"too long", false, []seg{{N: 16, Fill: in(0)}, {N: MaxDataLen + 512, Writable: true}, status}, StatusIOErr, 1},
		{"unknown type", false, []seg{{N: 16, Fill: header(11, 0)}, status}, StatusUnsupp, 1},
		{"legacy scsi", false, []seg{{N: 16, Fill: header(2, 0)}, status}, StatusUnsupp, 1},
		{"flush with data", false, []seg{{N: 16, Fill: header(TypeFlush, 0)}, {N: 512, Writable: true}, status}, StatusIOErr, 1},
		{"flush with readable data", false, []seg{{N: 16, Fill: header(TypeFlush, 0)}, {N: 512}, status}, StatusIOErr, 1},
		{"get-id with readable data", false, []seg{{N: 16, Fill: header(TypeGetID, 0)}, {N: 20}, {N: 21, Writable: true}}, StatusIOErr, 1},
		{"empty read", false, []seg{{N: 16, Fill: in(4096)}, status}, StatusOK, 1},
		{"empty write", false, []seg{{N: 16, Fill: header(TypeOut, 3)}, status}, StatusOK, 1},
		{"empty read past the end", false, []seg{{N: 16, Fill: in(4097)}, status}, StatusIOErr, 1},
		{"write to a read-only disk", true, []seg{{N: 16, Fill: header(TypeOut, 0)}, {N: 512}, status}, StatusIOErr, 1},
		{"flush of a read-only disk", true, []seg{{N: 16, Fill: header(TypeFlush, 0)}, status}, StatusOK, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, _ := newTestGuest(t, Config{ReadOnly: c.ro})
			r := g.post(c.segs...)
			g.notify()
			g.Collect()
			if !r.Done || r.Written != c.written {
				t.Fatalf("done %v, written %d; want done, written %d", r.Done, r.Written, c.written)
			}
			if c.status >= 0 {
				if st := g.Mem(r.statusAddr, 1)[0]; st != byte(c.status) {
					t.Errorf("status %d, want %d", st, c.status)
				}
			}
			if s, w := g.dev.InFlight(); s != 0 || w != 0 || g.dev.nextTag != 1 {
				t.Errorf("%d submitted, %d waiting, next tag %d: want nothing", s, w, g.dev.nextTag)
			}
			if !g.MMIO.Active() {
				t.Errorf("device broken: %s", g.MMIO.Fault())
			}
		})
	}
}

func TestParseRejectsWhatNotifyCannotBuild(t *testing.T) {
	// parse never sees writeLen 0 from Notify; check it directly anyway.
	var h [headerLen]byte
	copy(h[:], header(TypeIn, 0))
	if v := parse(headerLen, 1, h, Config{Capacity: 512}); v.op != 0 || v.status != StatusOK {
		t.Errorf("empty read: %+v", v)
	}
	if v := parse(headerLen, 513, h, Config{}); v.op != 0 || v.status != StatusIOErr {
		t.Errorf("read of an empty disk: %+v", v)
	}
}

func TestBackendErrorsBecomeIOErr(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	disk.fail[1] = true
	w := g.write(0, pattern(512, 0))
	r := g.read(8, 512)
	g.notify()
	g.complete(disk, 1)
	if st := g.status(w); st != StatusIOErr || w.Written != 1 {
		t.Errorf("failed write: status %d written %d", st, w.Written)
	}
	// A completion whose data does not fit the read (a corrupt log).
	g.dev.Complete(bounce.Completion{Tag: 2, Data: make([]byte, 100)})
	if st := g.status(r); st != StatusIOErr || r.Written != 1 {
		t.Errorf("short read: status %d written %d", st, r.Written)
	}
	// Unknown tags are ignored.
	g.dev.Complete(bounce.Completion{Tag: 99})
	if len(g.Rings[0].Used) != 2 {
		t.Errorf("%d used entries", len(g.Rings[0].Used))
	}
}

func TestMaxInFlight(t *testing.T) {
	disk := &memDisk{img: make([]byte, testCapacity)}
	g := newGuest(t, Config{Capacity: testCapacity}, replayEngine(t), 256)
	var reqs []*req
	for i := range 80 {
		reqs = append(reqs, g.read(uint64(i), 512))
	}
	g.notify()
	if s, w := g.dev.InFlight(); s != MaxInFlight || w != 80-MaxInFlight {
		t.Fatalf("%d submitted, %d waiting", s, w)
	}
	g.complete(disk, 5)
	if s, w := g.dev.InFlight(); s != MaxInFlight || w != 80-MaxInFlight-1 || g.dev.inflight[MaxInFlight+1] == nil {
		t.Fatalf("after one completion: %d submitted, %d waiting", s, w)
	}
	g.drain(disk)
	for _, r := range reqs {
		if g.status(r) != StatusOK {
			t.Fatal("read failed")
		}
	}
}

// Guest RAM that stops being RAM under a request (a hot-unplug, a
// hostile memory map) makes it fail, not the device.
func TestMemoryVanishingUnderARequest(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	g.write(0, pattern(512, 1))      // 1
	w := g.write(0, pattern(512, 2)) // 2: waits for 1
	r := g.read(8, 512)              // 3
	g.notify()
	g.Hole = [2]uint64{w.dataAddr, w.dataAddr + 1}
	g.complete(disk, 1) // 2 is submitted now, and cannot gather its data
	if st := g.status(w); st != StatusIOErr || disk.img[0] != pattern(512, 1)[0] {
		t.Errorf("write with its data gone: status %d", st)
	}
	g.Hole = [2]uint64{r.dataAddr + 100, r.dataAddr + 101}
	g.complete(disk, 3)
	if st := g.status(r); st != StatusIOErr || r.Written != 1 {
		t.Errorf("read into a hole: status %d written %d", st, r.Written)
	}
}

// What a VMM reads from a disk's Attachment, and the device it builds on
// the VMM's engine slot.
func TestAttachment(t *testing.T) {
	e := replayEngine(t)
	a := Attachment(Config{Capacity: testCapacity, ID: "d0"}, func(bounce.Request) ([]byte, error) { return nil, nil }, DiskOptions{Identity: "size=2097152", OwnCopy: true})
	if a.Kind != "virtio-blk" || a.Identity != "size=2097152" || !a.ReplayWrites || a.Backend == nil {
		t.Fatalf("attachment %+v", a)
	}
	dev, err := a.New(e, 3<<56)
	if err != nil {
		t.Fatal(err)
	}
	d := dev.(*Device)
	if d.Engine() != e || d.Config().TagBase != 3<<56 || d.nextTag != 3<<56+1 || d.Config().ID != "d0" {
		t.Errorf("built on engine %p (want %p), config %+v, next tag %#x", d.Engine(), e, d.Config(), d.nextTag)
	}
	if a := Attachment(Config{Capacity: testCapacity}, nil, DiskOptions{}); a.ReplayWrites || a.Identity != "" {
		t.Errorf("a shared disk without identity: %+v", a)
	}
	bad := Attachment(Config{Capacity: 1000}, nil, DiskOptions{})
	if _, err := bad.New(e, 0); err == nil {
		t.Error("a bad config built a device")
	}
}
