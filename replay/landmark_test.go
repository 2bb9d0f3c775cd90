package replay

import (
	"errors"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

func landmarkEvent(exits uint64) *logpb.Event {
	return &logpb.Event{Seq: 7, Exits: exits, Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Timer: true, Landmark: &logpb.Landmark{Rip: 0x1000}}}}
}

func TestLocatorCompletesTheExitThenLoads(t *testing.T) {
	var l locator
	if l.busy() || l.entry() != vmm.EntryRun || l.at(vmm.Point{Exits: 3, Kind: vmm.AtExit}) != locWait {
		t.Fatal("an idle locator must run freely and wait")
	}
	ev := landmarkEvent(5)
	l.start(ev)
	if !l.busy() {
		t.Fatal("not busy after start")
	}
	// At the exit: complete it without running a guest instruction.
	if got := l.at(vmm.Point{Exits: 5, Kind: vmm.AtExit}); got != locWait {
		t.Fatalf("at the exit: %v, want wait", got)
	}
	if l.entry() != vmm.EntryComplete {
		t.Fatal("the entry after the landmark's exit must only complete it")
	}
	// After the completion entry the vCPU stands where loading is allowed.
	if got := l.at(vmm.Point{Exits: 5, Kind: vmm.Kicked}); got != locLoad {
		t.Fatalf("after completing: %v, want load", got)
	}
	if l.done() != ev || l.busy() || l.entry() != vmm.EntryRun {
		t.Fatal("done must hand back the target and go idle")
	}
}

func TestLocatorReportsAnExitPastTheLandmark(t *testing.T) {
	var l locator
	l.start(landmarkEvent(5))
	for _, p := range []vmm.Point{{Exits: 6, Kind: vmm.AtExit}, {Exits: 4, Kind: vmm.Kicked}, {Exits: 9, Kind: vmm.Window}} {
		if got := l.at(p); got != locDiverged {
			t.Errorf("at %v: %v, want diverged", p, got)
		}
	}
}

// fakeMachine records what loadLandmark writes.
type fakeMachine struct {
	pages   map[uint32][]byte
	state   *vmm.VCPUState
	failSet error
}

func (f *fakeMachine) LoadPage(pfn uint32, data []byte) error {
	if f.pages == nil {
		f.pages = map[uint32][]byte{}
	}
	f.pages[pfn] = data
	return nil
}

func (f *fakeMachine) ApplyVCPUState(s vmm.VCPUState) error {
	f.state = &s
	return f.failSet
}

func stateLandmark(t *testing.T) *logpb.Landmark {
	t.Helper()
	var st vmm.VCPUState
	st.Regs.RIP, st.Regs.RFLAGS, st.Regs.RAX, st.Regs.R15 = 0xffffffff81000010, 0x246, 42, 7
	st.Sregs.CR3 = 0x5000
	st.XSAVE = []byte{0x7f, 3}
	st.MSRIndex, st.MSRValue = []uint32{0xc0000082}, []uint64{0xffffffff81800000}
	blob, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 4096)
	page[100] = 9
	return &logpb.Landmark{
		Rip: st.Regs.RIP, Rflags: st.Regs.RFLAGS, Gprs: vmm.GPRs(st.Regs),
		Pages:     []uint32{2, 5},
		VcpuState: blob,
		PageData:  []*logpb.Page{{Pfn: 2, Zero: true}, {Pfn: 5}},
		PagesZstd: pageEncoder.EncodeAll(page, nil),
	}
}

func TestLoadLandmarkWritesPagesAndState(t *testing.T) {
	lm := stateLandmark(t)
	var m fakeMachine
	if err := loadLandmark(&m, 1<<20, lm); err != nil {
		t.Fatal(err)
	}
	if d, ok := m.pages[2]; !ok || d != nil {
		t.Errorf("page 2 (zero): %v %v, want loaded as zeros (nil)", ok, d)
	}
	if d := m.pages[5]; len(d) != 4096 || d[100] != 9 {
		t.Errorf("page 5 not loaded with its data")
	}
	if m.state == nil || m.state.Regs.RAX != 42 || m.state.Sregs.CR3 != 0x5000 || m.state.MSRValue[0] != 0xffffffff81800000 || string(m.state.XSAVE) != "\x7f\x03" {
		t.Errorf("state not applied as recorded: %+v", m.state)
	}
}

// Every malformed landmark is refused before anything is written.
func TestLoadLandmarkRefusesMalformed(t *testing.T) {
	cases := map[string]func(lm *logpb.Landmark){
		"no state":           func(lm *logpb.Landmark) { lm.VcpuState = nil },
		"truncated state":    func(lm *logpb.Landmark) { lm.VcpuState = lm.VcpuState[:40] },
		"trailing state":     func(lm *logpb.Landmark) { lm.VcpuState = append(lm.VcpuState, 0) },
		"bad version":        func(lm *logpb.Landmark) { lm.VcpuState[0] = 9 },
		"registers disagree": func(lm *logpb.Landmark) { lm.Rip++ },
		"gprs disagree":      func(lm *logpb.Landmark) { lm.Gprs[0]++ },
		"page count":         func(lm *logpb.Landmark) { lm.Pages = lm.Pages[:1] },
		"pfn mismatch":       func(lm *logpb.Landmark) { lm.Pages[1] = 6 },
		"outside memory":     func(lm *logpb.Landmark) { lm.Pages[1], lm.PageData[1].Pfn = 256, 256 },
		"not ascending":      func(lm *logpb.Landmark) { lm.Pages[0], lm.PageData[0].Pfn = 5, 5 },
		"short pages":        func(lm *logpb.Landmark) { lm.PagesZstd = pageEncoder.EncodeAll(make([]byte, 4095), nil) },
		"long pages":         func(lm *logpb.Landmark) { lm.PagesZstd = pageEncoder.EncodeAll(make([]byte, 8192), nil) },
		"garbage pages":      func(lm *logpb.Landmark) { lm.PagesZstd = []byte("not zstd at all") },
		"data for no page":   func(lm *logpb.Landmark) { lm.PageData[1].Zero = true },
		"missing data":       func(lm *logpb.Landmark) { lm.PagesZstd = nil },
		"huge xsave length":  func(lm *logpb.Landmark) { corruptXSAVELen(lm) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			lm := stateLandmark(t)
			mutate(lm)
			var m fakeMachine
			err := loadLandmark(&m, 1<<20, lm)
			if err == nil {
				t.Fatal("accepted")
			}
			if len(m.pages) != 0 || m.state != nil {
				t.Errorf("wrote before refusing: %d pages, state %v", len(m.pages), m.state != nil)
			}
		})
	}
}

// corruptXSAVELen sets the xsave length field past the data.
func corruptXSAVELen(lm *logpb.Landmark) {
	var st vmm.VCPUState
	full, _ := st.MarshalBinary()
	// The length follows the fixed-size registers: its offset is the
	// empty state's size minus length(2), xcrs flag(1), MSR count(2).
	off := len(full) - 5
	lm.VcpuState[off], lm.VcpuState[off+1] = 0xff, 0xff
}

func TestLoadLandmarkPassesOnApplyError(t *testing.T) {
	m := fakeMachine{failSet: errors.New("KVM_SET_SREGS: invalid argument")}
	err := loadLandmark(&m, 1<<20, stateLandmark(t))
	if err == nil || !strings.Contains(err.Error(), "KVM_SET_SREGS") {
		t.Fatalf("err = %v", err)
	}
}
