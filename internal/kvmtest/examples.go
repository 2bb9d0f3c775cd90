package kvmtest

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

// RunExamples is the TestMain of a package whose named Examples boot
// guests (and so need /dev/kvm) and have Output lines, which makes go
// test run them. An Example cannot skip itself, so where Require would
// skip (no usable /dev/kvm, and Decide says Skip) it adds those names to
// the test.skip flag: they are left out, said on stderr, and the rest
// runs as usual (a test's own Require skips it). Where Decide says Fail
// (CI=true without KVM) they run, and fail. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(kvmtest.RunExamples(m, "ExampleRecordFile")) }
func RunExamples(m *testing.M, examples ...string) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	err := Usable()
	if err == nil {
		return m.Run()
	}
	action, msg := Decide(false, os.Getenv)
	if action == Skip && len(examples) > 0 {
		skipExamples(examples, msg, err)
	}
	return m.Run()
}

func skipExamples(examples []string, msg string, err error) {
	f := flag.Lookup("test.skip")
	if f == nil {
		return
	}
	pattern := "^(" + strings.Join(examples, "|") + ")$"
	if old := f.Value.String(); old != "" {
		pattern = old + "|" + pattern
	}
	if f.Value.Set(pattern) != nil {
		return
	}
	fmt.Fprintf(os.Stderr, "kvmtest: skipping %s: %s (%v)\n", strings.Join(examples, ", "), msg, err)
}
