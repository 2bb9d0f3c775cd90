// Package kvmtest decides what a test that needs /dev/kvm does on a machine
// without one. The project's machines have no /dev/kvm; `make test` runs
// the KVM tests a second time inside an emulated host with a standard KVM
// (package testbed), so a skip on the machine itself is expected there but
// must never hide a KVM test in CI.
package kvmtest

import (
	"os"
	"testing"
)

// Device is the KVM device Require opens.
const Device = "/dev/kvm"

// Require returns if /dev/kvm opens read-write; otherwise it skips or fails
// the test (see Decide). Every test that needs KVM calls it first.
func Require(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(Device, os.O_RDWR, 0)
	if err == nil {
		f.Close()
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
