// Package replay records a VM's nondeterministic inputs and replays them,
// so that a second VM started from the same image goes through the same
// states: the engine under ftkvm's fault-tolerant pair (package ft), and
// `ftvm record` / `ftvm replay`.
//
// # What is logged
//
// A Recorder is the primary's vmm.Driver. Every input from outside the
// guest enters at a point both sides can name (vmm.Point):
//
//   - at a synchronous exit (counted: the same state makes the same exits):
//     device clock reads, trapped rdtsc values, PIO/MMIO read values
//     (verify mode), console input and DMA completions delivered there,
//     and the interrupts injected;
//   - between two exits, where a kick (or an interrupt-window exit) stopped
//     the vCPU because an event had waited KickAfter for an exit: a
//     delivery with a landmark.
//
// # Landmarks: state transfer
//
// Reaching the exact instruction where the primary was kicked is what
// deterministic replay usually does with a branch counter and breakpoints
// or single steps. A standard AMD KVM (and the emulated hosts ftkvm tests
// on: QEMU's TCG with nested SVM) offers none of that reliably: there is
// no PMU, single steps set RFLAGS.TF where the guest can see it (a
// stepped pushf stores it), and int3 or debug-register breakpoints do not
// reach userspace. So a landmark carries the state instead
// (StrategyStateTransfer): the whole vCPU state at the point (vmm.VCPUState)
// and the contents of every guest page written since the previous
// landmark (KVM's dirty log says which), zstd-compressed. The replayer
// runs to the landmark's exit (exits are deterministic), completes it
// without running a guest instruction, checks its registers against the
// ones the primary had at that exit, and loads the state. From then on
// both sides are in the same state: pages nobody wrote are equal by
// induction, the written ones and the vCPU are copied. No step or
// breakpoint is needed, in kernel or user mode, inside a rep-prefixed
// instruction or anywhere else, and the replay never runs slower than
// the guest between exits (it skips the stretch the landmark covers).
//
// The price is log volume (see the README's figures) and that a replay
// does not re-execute the instructions between an exit and a landmark:
// a divergence there is caught by the exit-register check at the next
// landmark, by the checks at every exit (reads in verify mode, TSC, the
// end) and by the periodic whole-machine fingerprints
// (RecorderConfig.FingerprintEvery), not at the instruction that caused
// it.
//
// # Usage
//
// Record:
//
//  1. r, _ := NewRecorder(RecorderConfig{Sink: sink})
//  2. create the VM with Clock r.Clock(), Driver r and TrackDirty;
//  3. load the guest, write NewHeader(vm, ...) first in the log, vm.Run.
//
// Replay:
//
//  1. rp, _ := NewReplayer(ReplayerConfig{Source: src})
//  2. create a VM of the same configuration with Clock rp.Clock() and
//     Driver rp, load the same guest, compare headers
//     (logio.CompareHeaders), vm.Run: it ends with the recorded result or
//     a *DivergenceError naming the first event that disagreed.
//
// Go-live (an FT backup whose primary died): ReplayerConfig.GoLive makes
// the end of the Source a handover to host inputs instead of an error.
package replay
