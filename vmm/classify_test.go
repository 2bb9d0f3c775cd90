package vmm

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClassifyDecodedExits runs the contract from the raw kvm_run exit
// reason through decodeExit and classify: which KVM_RUN returns count as
// synchronous exits.
func TestClassifyDecodedExits(t *testing.T) {
	for _, tc := range []struct {
		reason uint32
		setup  func(u []byte) // fills the exit union (I/O: dir, size, count at 4, data offset at 8)
		kind   ExitKind
		class  exitClass
	}{
		{exitIO, func(u []byte) { u[0], u[1], u[4], u[9] = 0, 1, 1, 0x04 }, ExitIOIn, classSync},
		{exitIO, func(u []byte) { u[0], u[1], u[4], u[9] = 1, 4, 1, 0x04 }, ExitIOOut, classSync},
		{exitMMIO, func(u []byte) { u[16], u[20] = 4, 0 }, ExitMMIORead, classSync},
		{exitMMIO, func(u []byte) { u[16], u[20] = 8, 1 }, ExitMMIOWrite, classSync},
		{exitHLT, nil, ExitHLT, classSync},
		{exitX86RDMSR, nil, ExitRDMSR, classSync},
		{exitX86WRMSR, nil, ExitWRMSR, classSync},
		{exitIntr, nil, ExitIntr, classSync},
		{exitShutdown, nil, ExitShutdown, classSync},
		{exitInternalError, nil, ExitInternalError, classSync},
		{exitFailEntry, nil, ExitFailEntry, classSync},
		{exitDebug, nil, ExitDebug, classSync},
		{exitUnknown, nil, ExitOther, classSync},
		{exitException, nil, ExitOther, classSync},
		{exitSystemEvent, nil, ExitOther, classSync},
		{1000, nil, ExitOther, classSync},
		{exitIRQWindowOpen, nil, ExitIRQWindow, classWindow},
	} {
		run := fakeRun()
		binary.LittleEndian.PutUint32(run[8:], tc.reason)
		if tc.setup != nil {
			tc.setup(run[kvmRunExitOffset:])
		}
		e, err := decodeExit(run)
		if err != nil {
			t.Errorf("reason %d: %v", tc.reason, err)
			continue
		}
		if e.Kind != tc.kind {
			t.Errorf("reason %d decoded as %v, want %v", tc.reason, e.Kind, tc.kind)
		}
		if got := classify(0, e); got != tc.class {
			t.Errorf("reason %d (%v): classify = %v, want %v", tc.reason, e.Kind, got, tc.class)
		}
	}
}

// TestClassifyErrno: a failed KVM_RUN is classified by its errno alone; the
// exit union it leaves behind is stale and must not matter.
func TestClassifyErrno(t *testing.T) {
	stale := []Exit{{}, {Kind: ExitHLT}, {Kind: ExitIRQWindow}, {Kind: ExitIOOut, Port: 0x3f8}, {Kind: ExitIntr}}
	for _, tc := range []struct {
		errno unix.Errno
		class exitClass
	}{
		{unix.EINTR, classKicked},
		{unix.EAGAIN, classRetry},
		{unix.EFAULT, classFailed},
		{unix.EINVAL, classFailed},
		{unix.ENOEXEC, classFailed},
		{unix.ENOMEM, classFailed},
		{unix.EBADF, classFailed},
	} {
		for _, e := range stale {
			if got := classify(tc.errno, e); got != tc.class {
				t.Errorf("classify(%v, %v) = %v, want %v", tc.errno, e.Kind, got, tc.class)
			}
		}
	}
	// Every kind of decoded exit but the interrupt window is synchronous.
	for k := ExitIOIn; k <= ExitOther; k++ {
		want := classSync
		if k == ExitIRQWindow {
			want = classWindow
		}
		if got := classify(0, Exit{Kind: k}); got != want {
			t.Errorf("classify(0, %v) = %v, want %v", k, got, want)
		}
	}
}

func TestExitClassNextPoint(t *testing.T) {
	for _, tc := range []struct {
		class exitClass
		from  Point
		want  Point
	}{
		{classSync, Point{Exits: 0, Kind: AtExit}, Point{Exits: 1, Kind: AtExit}},
		{classSync, Point{Exits: 7, Kind: Kicked}, Point{Exits: 8, Kind: AtExit}},
		{classSync, Point{Exits: 7, Kind: Window}, Point{Exits: 8, Kind: AtExit}},
		{classKicked, Point{Exits: 7, Kind: AtExit}, Point{Exits: 7, Kind: Kicked}},
		{classKicked, Point{Exits: 7, Kind: Window}, Point{Exits: 7, Kind: Kicked}},
		{classWindow, Point{Exits: 7, Kind: AtExit}, Point{Exits: 7, Kind: Window}},
		{classWindow, Point{Exits: 7, Kind: Kicked}, Point{Exits: 7, Kind: Window}},
		{classRetry, Point{Exits: 7, Kind: AtExit}, Point{Exits: 7, Kind: AtExit}},
		{classRetry, Point{Exits: 7, Kind: Kicked}, Point{Exits: 7, Kind: Kicked}},
		{classFailed, Point{Exits: 7, Kind: Window}, Point{Exits: 7, Kind: Window}},
	} {
		if got := tc.class.next(tc.from); got != tc.want {
			t.Errorf("%v.next(%v) = %v, want %v", tc.class, tc.from, got, tc.want)
		}
	}
}

func TestDeliveryContract(t *testing.T) {
	for _, tc := range []struct {
		kind      PointKind
		delivered bool
		input     bool
		inject    bool
	}{
		{AtExit, false, true, true},
		{AtExit, true, true, true},
		{Kicked, false, false, false},
		{Kicked, true, false, true},
		{Window, false, false, false},
		{Window, true, false, true},
	} {
		p := Point{Exits: 3, Kind: tc.kind}
		if got := offersInput(p); got != tc.input {
			t.Errorf("offersInput(%v) = %v", p, got)
		}
		if got := mayInject(p, tc.delivered, false); got != tc.inject {
			t.Errorf("mayInject(%v, %v, false) = %v", p, tc.delivered, got)
		}
		if mayInject(p, tc.delivered, true) {
			t.Errorf("mayInject(%v, %v, true): injected at an exit that completes with an exception", p, tc.delivered)
		}
	}
}

func TestExitClassString(t *testing.T) {
	for c, want := range map[exitClass]string{classSync: "sync", classKicked: "kicked", classWindow: "window", classRetry: "retry", classFailed: "failed", 0: "exitClass(0)"} {
		if got := c.String(); got != want {
			t.Errorf("%d: %q, want %q", c, got, want)
		}
	}
}
