package logio

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

func sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func testHeader() *logpb.Header {
	return &logpb.Header{
		Version:       1,
		CpuidSha256:   sum("cpuid"),
		MemoryBytes:   128 << 20,
		KernelSha256:  sum("kernel"),
		InitrdSha256:  sum("initrd"),
		Cmdline:       "console=ttyS0 clearcpuid=rdrand",
		EpochUnixNano: 1_700_000_000_123_456_789,
		Verify:        true,
		RdtscSites:    42,
		Fingerprint:   "sha256(regs,xxh64/page)",
		Recorder:      "logio test",
	}
}

// testEvents returns n events (n ≥ 8) cycling through every kind, the
// last one End, with seq 1..n and non-decreasing exits.
func testEvents(n int) []*logpb.Event {
	evs := make([]*logpb.Event, 0, n)
	exits := uint64(0)
	for i := 1; i <= n; i++ {
		ev := &logpb.Event{Seq: uint64(i), Exits: exits}
		switch {
		case i == n:
			ev.Kind = &logpb.Event_End{End: &logpb.End{
				Reason: 1, Status: 3, Fingerprint: &logpb.Fingerprint{Sha256: sum("final")}, Error: "",
			}}
		default:
			switch i % 8 {
			case 0:
				ev.Kind = &logpb.Event_Clock{Clock: int64(i) * 1_000_003}
			case 1:
				ev.Kind = &logpb.Event_Deliver{Deliver: &logpb.Deliver{Timer: true, Input: []byte("ls\n")}}
			case 2:
				ev.Kind = &logpb.Event_Deliver{Deliver: &logpb.Deliver{
					Landmark: &logpb.Landmark{
						Rip: 0xffffffff81000000 + uint64(i), Rflags: 0x202,
						Gprs:  []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, uint64(i)},
						Pages: []uint32{1, 2, uint32(i) + 100}, PagesSha256: sum("pages"),
					},
					Input: []byte{byte(i)},
				}}
				if i == 10 {
					// One record over 127 bytes: a two-byte length prefix.
					ev.GetDeliver().Input = bytes.Repeat([]byte("x"), 200)
				}
			case 3:
				ev.Kind = &logpb.Event_Inject{Inject: 0x20 + uint32(i%16)}
			case 4:
				ev.Kind = &logpb.Event_Tsc{Tsc: uint64(i) * 2_500_000}
			case 5:
				ev.Kind = &logpb.Event_Read{Read: &logpb.Read{Mmio: i%2 == 0, Addr: 0x3f8 + uint64(i%8), Data: []byte{byte(i), 0}}}
			case 6:
				ev.Kind = &logpb.Event_Fingerprint{Fingerprint: &logpb.Fingerprint{Sha256: sum(string(rune(i)))}}
			case 7:
				// Several events at the same exit: exits stays put.
				ev.Kind = &logpb.Event_Clock{Clock: 0}
				if i%16 == 15 {
					ev.Kind = &logpb.Event_Output{Output: &logpb.Output{Data: []byte("login: "), Released: uint64(i)}}
				}
				if i%16 == 7 {
					ev.Kind = &logpb.Event_Submit{Submit: &logpb.Submit{Tag: 1<<56 | uint64(i), Len: 4096}}
				}
				if i%64 == 23 {
					ev.Kind = &logpb.Event_Handover{Handover: &logpb.Handover{Kind: 1, Fingerprint: &logpb.Fingerprint{Sha256: sum("h")}, Reason: "test"}}
				}
			}
		}
		if i%3 == 0 {
			exits += uint64(i % 7)
		}
		evs = append(evs, ev)
	}
	return evs
}

// encodedLog is a log in memory with the byte offset where each record
// starts: starts[0] the header record, starts[i] event i, and
// starts[len-1] the end of the log.
type encodedLog struct {
	data   []byte
	starts []int
}

func writeLog(t testing.TB, h *logpb.Header, evs []*logpb.Event) encodedLog {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	starts := []int{fileHeaderSize, int(w.Bytes())}
	for _, ev := range evs {
		if err := w.Append(ev); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, int(w.Bytes()))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int(w.Bytes()) != buf.Len() {
		t.Fatalf("Bytes() = %d, wrote %d", w.Bytes(), buf.Len())
	}
	return encodedLog{data: buf.Bytes(), starts: starts}
}

// record returns event i's record bytes (i = 0: the header record).
func (l encodedLog) record(i int) []byte { return l.data[l.starts[i]:l.starts[i+1]] }

// readAll reads every event; it returns the events read before the error
// (nil error on a clean io.EOF).
func readAll(data []byte) (*Reader, []*logpb.Event, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var evs []*logpb.Event
	for {
		ev, err := r.Next()
		if err != nil {
			if err == io.EOF {
				return r, evs, nil
			}
			return r, evs, err
		}
		evs = append(evs, ev)
	}
}
