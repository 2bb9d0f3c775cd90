// Package kvmtest decides what a test that needs /dev/kvm does on a machine
// without one. The project's machines have no /dev/kvm; `make test` runs
// the KVM tests a second time inside an emulated host with a standard KVM
// (package testbed), so a skip on the machine itself is expected there but
// must never hide a KVM test in CI.
package kvmtest

import (
	"errors"
	"os"
	"testing"
)

// Device is the KVM device Require opens.
const Device = "/dev/kvm"

// PVMModule is present where /dev/kvm is kvm-pvm, a nested PVM hypervisor
// whose instruction emulator cannot run the test guests (int3, clac/stac,
// fwait and more end KVM_RUN as emulation failures). Such a /dev/kvm counts
// as none (Usable), as in scripts/kvm.sh.
const PVMModule = "/sys/module/kvm_pvm"

// EnvKVM=native uses /dev/kvm whatever it is; EnvKVM=emulated never does.
const EnvKVM = "FTKVM_KVM"

// Usable reports whether the tests run on this machine's /dev/kvm: it
// opens read-write, and it is not kvm-pvm unless EnvKVM says native. The
// error says why not.
func Usable() error {
	f, err := os.OpenFile(Device, os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	_, statErr := os.Stat(PVMModule)
	return usable(err, statErr == nil, os.Getenv)
}

// usable is Usable's policy as a pure function.
func usable(openErr error, pvm bool, getenv func(string) string) error {
	switch {
	case getenv(EnvKVM) == "emulated":
		return errors.New(EnvKVM + "=emulated")
	case openErr != nil:
		return openErr
	case pvm && getenv(EnvKVM) != "native":
		return errors.New(Device + " is kvm-pvm, whose instruction emulator cannot run the test guests (" + EnvKVM + "=native uses it anyway)")
	}
	return nil
}

// Require returns if this machine's /dev/kvm is usable (Usable); otherwise
// it skips or fails the test (see Decide). Every test that needs KVM calls
// it first.
func Require(t testing.TB) {
	t.Helper()
	err := Usable()
	if err == nil {
		return
	}
	switch action, msg := Decide(false, os.Getenv); action {
	case Skip:
		t.Skip(msg + " (" + err.Error() + ")")
	case Fail:
		t.Fatal(msg + " (" + err.Error() + ")")
	}
}

// Action is what a KVM test does.
type Action int

const (
	Run  Action = iota // KVM is here: run the test
	Skip               // skip it, with the message
	Fail               // fail it, with the message
)

func (a Action) String() string {
	switch a {
	case Run:
		return "run"
	case Skip:
		return "skip"
	case Fail:
		return "fail"
	}
	return "Action(?)"
}

// Environment variables Decide reads.
const (
	// EnvElsewhere=1: this run is `make test`'s native pass on a machine
	// without /dev/kvm; the same tests run again in the emulated host.
	EnvElsewhere = "FTKVM_KVM_ELSEWHERE"
	// EnvCI=true (as CI services set): a skipped KVM test would pass
	// unnoticed, so it fails instead.
	EnvCI = "CI"
)

// Decide is Require's policy as a pure function of whether /dev/kvm opened
// and the environment.
func Decide(kvmOK bool, getenv func(string) string) (Action, string) {
	switch {
	case kvmOK:
		return Run, ""
	case getenv(EnvElsewhere) == "1":
		return Skip, "needs /dev/kvm: runs in the emulated host (make test's KVM stage)"
	case getenv(EnvCI) == "true":
		return Fail, "needs /dev/kvm, missing, and CI=true: a KVM test must not be skipped (run make test, which runs KVM tests in an emulated host)"
	default:
		return Skip, "needs /dev/kvm, missing here: `make test` runs this test in an emulated KVM host (QEMU TCG + kvm_amd; see package testbed)"
	}
}
