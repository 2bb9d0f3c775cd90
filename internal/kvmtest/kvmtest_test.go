package kvmtest

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	for _, c := range []struct {
		name  string
		kvmOK bool
		env   map[string]string
		want  Action
		msg   string // a substring of the message
	}{
		{"kvm here", true, nil, Run, ""},
		{"kvm here, CI", true, map[string]string{"CI": "true"}, Run, ""},
		{"kvm here, elsewhere set", true, map[string]string{"FTKVM_KVM_ELSEWHERE": "1"}, Run, ""},
		{"no kvm, plain", false, nil, Skip, "make test"},
		{"no kvm, CI", false, map[string]string{"CI": "true"}, Fail, "CI=true"},
		{"no kvm, CI and elsewhere", false, map[string]string{"CI": "true", "FTKVM_KVM_ELSEWHERE": "1"}, Skip, "emulated host"},
		{"no kvm, elsewhere", false, map[string]string{"FTKVM_KVM_ELSEWHERE": "1"}, Skip, "make test's KVM stage"},
		{"no kvm, elsewhere not 1", false, map[string]string{"FTKVM_KVM_ELSEWHERE": "yes"}, Skip, "make test"},
		{"no kvm, CI not true", false, map[string]string{"CI": "1"}, Skip, "make test"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, msg := Decide(c.kvmOK, func(k string) string { return c.env[k] })
			if got != c.want {
				t.Fatalf("Decide = %v (%q), want %v", got, msg, c.want)
			}
			if !strings.Contains(msg, c.msg) {
				t.Fatalf("message %q lacks %q", msg, c.msg)
			}
		})
	}
}

// Require itself: on this machine either it returns (KVM here) or it
// skips; with CI=true and no KVM it would fail, which a subtest cannot
// show without failing, so that branch is Decide's test above.
func TestRequire(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv("FTKVM_KVM_ELSEWHERE", "1")
	ran := false
	t.Run("require", func(t *testing.T) {
		Require(t)
		ran = true
	})
	t.Logf("KVM here: %v", ran)
}

func TestUsable(t *testing.T) {
	openErr := errors.New("open /dev/kvm: no such file or directory")
	for _, c := range []struct {
		name    string
		openErr error
		pvm     bool
		env     string // FTKVM_KVM
		ok      bool
		msg     string
	}{
		{"standard kvm", nil, false, "", true, ""},
		{"no kvm", openErr, false, "", false, "no such file"},
		{"kvm-pvm", nil, true, "", false, "kvm-pvm"},
		{"kvm-pvm, native", nil, true, "native", true, ""},
		{"standard, emulated", nil, false, "emulated", false, "FTKVM_KVM=emulated"},
		{"no kvm, native", openErr, false, "native", false, "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := usable(c.openErr, c.pvm, func(k string) string {
				if k == EnvKVM {
					return c.env
				}
				return ""
			})
			if (err == nil) != c.ok {
				t.Fatalf("usable = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q lacks %q", err, c.msg)
			}
		})
	}
}

// Where Require would skip, RunExamples leaves the Examples out by adding
// the named Examples to test.skip, keeping a pattern already given.
func TestSkipExamples(t *testing.T) {
	f := flag.Lookup("test.skip")
	if f == nil {
		t.Fatal("no test.skip flag")
	}
	old := f.Value.String()
	defer f.Value.Set(old)
	f.Value.Set("")
	skipExamples([]string{"Example", "ExampleRecordFile"}, "needs /dev/kvm: elsewhere", errors.New("no device"))
	if got := f.Value.String(); got != "^(Example|ExampleRecordFile)$" {
		t.Errorf("test.skip = %q", got)
	}
	f.Value.Set("TestSlow")
	skipExamples([]string{"Example"}, "needs /dev/kvm: elsewhere", errors.New("no device"))
	if got := f.Value.String(); got != "TestSlow|^(Example)$" {
		t.Errorf("test.skip = %q", got)
	}
}
