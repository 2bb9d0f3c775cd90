package logio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// hostileDeliver is the payload of a valid Event (seq, exits 2^40, a
// Deliver kind) whose Deliver holds n empty Dma messages: 2 bytes each on
// the wire, a Go struct and a slice slot each once decoded.
func hostileDeliver(seq uint64, n int) []byte {
	var deliver []byte
	for i := 0; i < n; i++ {
		deliver = protowire.AppendTag(deliver, 4, protowire.BytesType) // Deliver.dma
		deliver = protowire.AppendVarint(deliver, 0)
	}
	var ev []byte
	ev = protowire.AppendTag(ev, 1, protowire.VarintType) // Event.seq
	ev = protowire.AppendVarint(ev, seq)
	ev = protowire.AppendTag(ev, 2, protowire.VarintType) // Event.exits
	ev = protowire.AppendVarint(ev, 1<<40)
	ev = protowire.AppendTag(ev, 4, protowire.BytesType) // Event.deliver
	return protowire.AppendBytes(ev, deliver)
}

// appendRecord frames payload as a record with a correct CRC.
func appendRecord(dst, payload []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	dst = append(dst, payload...)
	return binary.LittleEndian.AppendUint32(dst, crcOf(payload))
}

// Issue 11: a valid log (every CRC right) whose event 6 is a Deliver of
// 4 Mi empty DMA messages: 8 MiB on disk, some 450 MiB once decoded (a
// 64 MiB one took 5 GiB and 46 s). The Reader returns the five events
// before it, then refuses it quickly, without decoding it, naming the
// record and the limit.
func TestHostileRecordRefused(t *testing.T) {
	good := writeLog(t, testHeader(), testEvents(8))
	d := bytes.Clone(good.data[:good.starts[6]])
	d = appendRecord(d, hostileDeliver(6, 4<<20))
	d = append(d, good.record(6)...) // an event 7 after it, never reached
	t.Logf("hostile record: %d bytes", len(d)-good.starts[6]-len(good.record(6)))

	var (
		evs []*logpb.Event
		err error
	)
	start := time.Now()
	n := allocated(func() { _, evs, err = readAll(d) })
	took := time.Since(start)
	t.Logf("refused in %v, %d KiB allocated: %v", took, n>>10, err)
	wantFormatError(t, err, ErrTooLarge, 6, good.starts[6])
	if len(evs) != 5 {
		t.Errorf("read %d events before the hostile record, want 5", len(evs))
	}
	if msg := err.Error(); !strings.Contains(msg, "record 6 ") || !strings.Contains(msg, fmt.Sprint(MaxDecoded)) || !strings.Contains(msg, "MaxDecoded") {
		t.Errorf("error %q does not name the record and the limit", msg)
	}
	// The 8 MiB payload is read whole (in chunks) to check its CRC; no more.
	if n > 24<<20 {
		t.Errorf("reading allocated %d MiB", n>>20)
	}
	if took > 5*time.Second {
		t.Errorf("refusing took %v", took)
	}
}

// The header record is checked the same way: 12 Mi empty device names are
// 24 MiB on disk and a 16-byte string header each, with the slice's growth.
func TestHostileHeaderRefused(t *testing.T) {
	var h []byte
	for i := 0; i < 12<<20; i++ {
		h = protowire.AppendTag(h, 12, protowire.BytesType) // Header.devices
		h = protowire.AppendVarint(h, 0)
	}
	d := binary.LittleEndian.AppendUint32([]byte(Magic), FormatVersion)
	d = appendRecord(d, h)
	var err error
	n := allocated(func() { _, err = NewReader(bytes.NewReader(d)) })
	wantFormatError(t, err, ErrTooLarge, 0, fileHeaderSize)
	if n > 64<<20 {
		t.Errorf("reading allocated %d MiB", n>>20)
	}
}

// The estimate follows what proto.Unmarshal really allocates, from above
// and within a small factor, for the shapes a record can take; and honest
// records, including a landmark carrying many pages, stay far below
// MaxDecoded.
func TestDecodedCostModel(t *testing.T) {
	pages := make([]*logpb.Page, 100_000)
	pfns := make([]uint32, len(pages))
	for i := range pages {
		pages[i] = &logpb.Page{Pfn: uint32(i * 3), Zero: i%2 == 0}
		pfns[i] = uint32(i * 3)
	}
	dmas := make([]*logpb.Dma, 20_000)
	for i := range dmas {
		dmas[i] = &logpb.Dma{Tag: uint64(i), Data: make([]byte, 100)}
	}
	devices := make([]string, 100_000)
	for i := range devices {
		devices[i] = fmt.Sprintf("dev%06d", i)
	}
	for _, tc := range []struct {
		name string
		m    proto.Message
		wire []byte // instead of m
	}{
		{name: "empty dma", wire: hostileDeliver(1, 200_000)},
		{name: "dma with data", m: &logpb.Event{Seq: 1, Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Dma: dmas}}}},
		{name: "landmark pages", m: &logpb.Event{Seq: 1, Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Landmark: &logpb.Landmark{
			Pages: pfns, PageData: pages, PagesZstd: make([]byte, 1<<20), Gprs: make([]uint64, 16)}}}}},
		{name: "devices", m: &logpb.Header{Devices: devices}},
		{name: "read", m: &logpb.Event{Seq: 1, Kind: &logpb.Event_Read{Read: &logpb.Read{Data: make([]byte, 4<<20)}}}},
		{name: "unknown fields", wire: bytes.Repeat(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, 30)), 50_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := tc.wire
			var dst proto.Message = new(logpb.Event)
			if tc.m != nil {
				var err error
				if wire, err = proto.Marshal(tc.m); err != nil {
					t.Fatal(err)
				}
				dst = tc.m.ProtoReflect().New().Interface()
			}
			md := dst.ProtoReflect().Descriptor()
			est, _ := decodedCost(wire, md, MaxDecoded)
			real := allocated(func() {
				if err := proto.Unmarshal(wire, dst); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("%d bytes on the wire: estimated %d, allocated %d (%.2f)", len(wire), est, real, float64(est)/float64(real))
			if est < int64(real)*9/10 || est > 4*int64(real)+4096 {
				t.Errorf("estimated %d bytes, Unmarshal allocated %d", est, real)
			}
			if est > MaxDecoded/8 {
				t.Errorf("an honest record estimated at %d bytes, the limit is %d", est, MaxDecoded)
			}
			if tc.name == "landmark pages" {
				// A landmark carrying every page of the largest guest
				// (vmm.MaxMemory, 3 GiB) and a full payload of contents.
				perPage := float64(est-1<<20) / float64(len(pages))
				if all := perPage*(3<<30/4096) + MaxPayload; all > MaxDecoded {
					t.Errorf("%.0f bytes per page: a landmark of all 3 GiB would be estimated at %.0f bytes, over MaxDecoded", perPage, all)
				}
			}
		})
	}
}

// What the Reader would refuse, the Writer refuses first, writing nothing.
func TestWriterRefusesWhatWouldDecodeTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 3 Mi messages in memory")
	}
	w, err := NewWriter(io.Discard, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	before := w.Bytes()
	dmas := make([]*logpb.Dma, 3<<20)
	for i := range dmas {
		dmas[i] = new(logpb.Dma)
	}
	ev := &logpb.Event{Seq: 1, Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Dma: dmas}}}
	if err := w.Append(ev); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxDecoded") {
		t.Errorf("Append(3 Mi empty DMA messages) = %v, want ErrTooLarge naming MaxDecoded", err)
	}
	if w.Bytes() != before {
		t.Errorf("the refused event left %d bytes", w.Bytes()-before)
	}
}

// CheckDecoded is the Reader's check for records that come another way:
// it refuses the hostile Deliver without decoding it, and passes honest
// events and headers.
func TestCheckDecoded(t *testing.T) {
	var err error
	hostile := hostileDeliver(6, 4<<20)
	n := allocated(func() { err = CheckDecoded(hostile, &logpb.Event{}) })
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxDecoded") {
		t.Errorf("hostile event: err = %v, want ErrTooLarge naming MaxDecoded", err)
	}
	if n > 1<<20 {
		t.Errorf("checking allocated %d KiB", n>>10)
	}
	for _, ev := range testEvents(8) {
		b, _ := proto.Marshal(ev)
		if err := CheckDecoded(b, &logpb.Event{}); err != nil {
			t.Errorf("event %d: %v", ev.Seq, err)
		}
	}
	b, _ := proto.Marshal(testHeader())
	if err := CheckDecoded(b, &logpb.Header{}); err != nil {
		t.Errorf("header: %v", err)
	}
}
