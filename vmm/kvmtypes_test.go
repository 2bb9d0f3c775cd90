package vmm

import (
	"reflect"
	"testing"

	"github.com/bobuhiro11/gokvm/kvm"
)

// vmm's mirrors of the kernel's structures have gokvm's layouts, which
// kvm_unsafe.go relies on to pass them to its ioctls: the same size, and
// every field at the same offset with the same size, recursively.
func TestKVMMirrorLayouts(t *testing.T) {
	for _, c := range []struct{ ours, theirs any }{
		{Regs{}, kvm.Regs{}},
		{Sregs{}, kvm.Sregs{}},
		{Segment{}, kvm.Segment{}},
		{Descriptor{}, kvm.Descriptor{}},
		{CPUIDEntry{}, kvm.CPUIDEntry2{}},
	} {
		sameLayout(t, reflect.TypeOf(c.ours), reflect.TypeOf(c.theirs))
	}
}

func sameLayout(t *testing.T, a, b reflect.Type) {
	t.Helper()
	if a.Size() != b.Size() || a.Kind() != b.Kind() {
		t.Errorf("%v is %d bytes (%v), %v is %d (%v)", a, a.Size(), a.Kind(), b, b.Size(), b.Kind())
		return
	}
	switch a.Kind() {
	case reflect.Struct:
		if a.NumField() != b.NumField() {
			t.Errorf("%v has %d fields, %v %d", a, a.NumField(), b, b.NumField())
			return
		}
		for i := range a.NumField() {
			fa, fb := a.Field(i), b.Field(i)
			if fa.Offset != fb.Offset || (fa.Name != fb.Name && fa.Name != "_") {
				t.Errorf("%v.%s at %d, %v.%s at %d", a, fa.Name, fa.Offset, b, fb.Name, fb.Offset)
			}
			sameLayout(t, fa.Type, fb.Type)
		}
	case reflect.Array:
		if a.Len() != b.Len() {
			t.Errorf("%v and %v differ in length", a, b)
		}
		sameLayout(t, a.Elem(), b.Elem())
	}
}

// The CPUID conversions keep every entry.
func TestCPUIDConversions(t *testing.T) {
	c := CPUID{{Function: 1, Index: 2, Flags: 3, Eax: 4, Ebx: 5, Ecx: 6, Edx: 7}, {Function: 7}}
	if got := fromKVMCPUID(kvmCPUID(c)); !reflect.DeepEqual(CPUID(got), c) {
		t.Errorf("round trip: %+v, want %+v", got, c)
	}
	s := Sregs{CR3: 0x5000, CS: Segment{Selector: 8, L: 1}}
	if k := kvmSregs(&s); k.CR3 != 0x5000 || k.CS.Selector != 8 || k.CS.L != 1 {
		t.Errorf("kvmSregs: %+v", k)
	}
}
