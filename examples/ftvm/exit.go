package main

import (
	"errors"
	"os"

	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/snapshot"
	"github.com/ftkvm/ftkvm/split"
)

// ftvm's exit statuses: its contract with scripts (docs/cli.md). The
// guest's own status never becomes ftvm's: a guest that exits 1 must not
// look like "no /dev/kvm". A non-zero guest status is exitGuestStatus, and
// the status itself is on stderr ("guest exited with status N"), printed
// even with -q.
const (
	exitOK          = 0  // the guest powered off or exited with status 0; inspect: the log is whole
	exitError       = 1  // any error not listed below
	exitUsage       = 2  // bad flags or arguments
	exitReset       = 3  // the guest asked for a reset; ftvm does not reboot guests
	exitDiverged    = 4  // a replay (or an FT backup) parted from the recording
	exitLostClaim   = 5  // this side of an FT pair lost the test-and-set (the other side is live), or lost the claim it won
	exitNoKVM       = 6  // no usable /dev/kvm (see noKVMError)
	exitBadLog      = 7  // the log is damaged or incomplete (inspect, replay), or a snapshot is (run --restore)
	exitUnprotected = 8  // status: the side answered and is not protected
	exitGuestStatus = 10 // the guest exited with a non-zero status of its own
)

// exitCodes is the table `ftvm help` and docs/cli.md show.
const exitCodes = `exit status:
  0   the guest powered off or exited with status 0 (inspect: the log is whole)
  1   an error not listed below
  2   usage: bad flags or arguments
  3   the guest asked for a reset (ftvm does not reboot guests)
  4   divergence: the replay parted from the recording
  5   lost the test-and-set (the other side of the FT pair is live), or the etcd lease of a won claim
  6   no usable KVM (/dev/kvm missing, not permitted, or kvm-pvm)
  7   the log (or a snapshot, run --restore) is damaged or incomplete
  8   status: the side answered, and it is not protected
  10  the guest exited with a non-zero status (stderr says which: "guest exited with status N")
`

// exitCode classifies a command's error.
func exitCode(err error) int {
	var ue usageError
	var nk *noKVMError
	var fe *logio.FormatError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &nk):
		return exitNoKVM
	case errors.Is(err, replay.ErrDiverged):
		return exitDiverged
	case lostClaim(err):
		return exitLostClaim
	case errors.As(err, &fe), errors.Is(err, errIncompleteLog), errors.Is(err, snapshot.ErrCorrupt):
		return exitBadLog
	}
	return exitError
}

// lostClaim says whether err is a side's halt after losing the
// test-and-set, or losing the claim it won (an etcd lease): both sides'
// errors wrap split.ErrLost.
func lostClaim(err error) bool { return errors.Is(err, split.ErrLost) }

// errIncompleteLog: a log without its End event, which a recorder writes
// last: the recording was cut short (or is still being written).
var errIncompleteLog = errors.New("incomplete log: no end event (the recorder stopped before the run ended, or is still writing)")

// noKVMError says that this machine has no /dev/kvm that ftvm runs guests
// on, and where to run it instead.
type noKVMError struct{ why string }

func (e *noKVMError) Error() string {
	return "no usable KVM: " + e.why + ". ftvm needs a KVM host's /dev/kvm (as root or in the kvm group). " +
		"Without one, run it inside the emulated KVM host this project ships (QEMU TCG with kvm_amd): " +
		"'go run ./cmd/testbed setup' once (as root: it installs Debian's qemu-system-x86 and kernel), then " +
		"'go run ./cmd/testbed -- bin/ftvm run ...' from the repository; 'make demo' and 'make test' do this by themselves"
}

// kvmDevice and pvmModule are checked by checkKVM; variables for tests.
var (
	kvmDevice = "/dev/kvm"
	pvmModule = "/sys/module/kvm_pvm"
)

// checkKVM refuses a machine whose /dev/kvm does not open, or is kvm-pvm
// (a nested PVM hypervisor whose instruction emulator cannot run the
// guests: see docs/platform.md) unless FTKVM_KVM=native, as scripts/kvm.sh
// decides for make test and make demo.
func checkKVM() error {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return &noKVMError{why: err.Error()}
	}
	f.Close()
	if _, err := os.Stat(pvmModule); err == nil && os.Getenv("FTKVM_KVM") != "native" {
		return &noKVMError{why: kvmDevice + " is kvm-pvm, whose instruction emulator cannot run the guests (FTKVM_KVM=native uses it anyway)"}
	}
	return nil
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }
