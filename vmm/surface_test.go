package vmm

import "testing"

// The replay plumbing stays off *VM's method set: an embedder's VM is not
// a Machine, and VM.Machine is the view of that same VM, the one the run
// loop hands its Driver.
func TestMachineIsNotTheVM(t *testing.T) {
	v := &VM{}
	if _, ok := any(v).(Machine); ok {
		t.Error("*VM implements Machine: the replay plumbing is back on the embedder's type")
	}
	if _, ok := any(v).(WriteReplayer); ok {
		t.Error("*VM has ReplayWrites")
	}
	if _, ok := any(v).(PageCopier); ok {
		t.Error("*VM has CopyPages")
	}
	if _, ok := any(v).(interface{ DeliverAsync(Async) }); ok {
		t.Error("*VM has DeliverAsync")
	}
	m := v.Machine()
	if m.(machine).VM != v || m != v.Machine() {
		t.Error("VM.Machine is not a view of the VM itself")
	}
	if _, ok := m.(WriteReplayer); !ok {
		t.Error("the Machine lost WriteReplayer")
	}
	if _, ok := m.(PageCopier); !ok {
		t.Error("the Machine lost PageCopier")
	}
	if _, ok := m.(interface{ Close() error }); !ok {
		t.Error("the Machine does not carry the VM's own methods (ft.Machine asserts them)")
	}
}
