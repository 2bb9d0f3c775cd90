package kvmtest

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// RunExamples is the TestMain of a package whose Examples boot guests
// (and so need /dev/kvm) and have Output lines, which makes go test run
// them. An Example cannot skip itself, so where Require would skip (no
// usable /dev/kvm, and Decide says Skip) it adds "^Example" to the
// test.skip flag: the Examples are left out, said on stderr, and the
// tests run as usual (their own Require skips them). Where Decide says
// Fail (CI=true without KVM) the Examples run, and fail. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(kvmtest.RunExamples(m)) }
func RunExamples(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	err := Usable()
	if err == nil {
		return m.Run()
	}
	action, msg := Decide(false, os.Getenv)
	if action == Skip {
		skipExamples(msg, err)
	}
	return m.Run()
}

func skipExamples(msg string, err error) {
	f := flag.Lookup("test.skip")
	if f == nil {
		return
	}
	pattern := "^Example"
	if old := f.Value.String(); old != "" {
		pattern = old + "|" + pattern
	}
	if f.Value.Set(pattern) != nil {
		return
	}
	fmt.Fprintf(os.Stderr, "kvmtest: Examples skipped: they %s (%v)\n", trimNeeds(msg), err)
}

// trimNeeds turns Decide's "needs /dev/kvm: ..." into "need /dev/kvm: ...".
func trimNeeds(msg string) string {
	if len(msg) > 5 && msg[:5] == "needs" {
		return "need" + msg[5:]
	}
	return msg
}
