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
//     delivery with a landmark;
//   - with RecorderConfig.WindowCounts, at an interrupt-window exit: a
//     delivery at "the first window exit after exit N (or the landmark
//     after it)", with the registers there and no landmark. The replayer
//     asks for a window exactly there (Windows is true only then), and a
//     window exit at other registers, or one the log does not have, is a
//     divergence.
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
// The vCPU thread only copies what the landmark needs (the vCPU state
// and the dirty pages) and runs on; the recorder's log pipe (logpipe.go)
// hashes and compresses the copy on a goroutine of its own and appends
// it, with the events logged behind it queued until it is in the Sink,
// so the log's order and contents are what they would be without the
// pipe. A device write leaves only once its Submit event is in the Sink.
// RecordStats.LandmarkTime is what stays on the vCPU thread.
//
// The price is log volume (see the README's figures) and that a replay
// does not re-execute the instructions between an exit and a landmark:
// a divergence there is caught by the exit-register check at the next
// landmark, by the checks at every exit (reads in verify mode, TSC, the
// end) and by the periodic whole-machine fingerprints
// (RecorderConfig.FingerprintEvery), not at the instruction that caused
// it.
//
// # The machine seam
//
// The recorder and the replayer see the VM only as a vmm.Machine: the
// point, registers, whole vCPU state, guest pages, the dirty log, the
// devices' clock and timer, and delivery of asynchronous events. *vmm.VM
// is one; the package's tests drive both drivers against a toy machine
// made of plain values (machine_test.go), so round trips, tampered logs
// and every cut of a log that ends in a go-live run in milliseconds
// without KVM. The landmark locator (landmark.go) is a typed state machine
// with no I/O. What a Machine may also offer is declared in vmm, not
// probed: one that writes its own copy of a disk while replayed is a
// vmm.WriteReplayer, and the bounce engine's modes are set as
// vmm.Machine.Bounce says.
//
// # Inside the replayer
//
// A Replayer is a log cursor (cursor.go: the next event, the first
// divergence) plus the driver of the phase the run is in, to which every
// vmm.Driver call goes: replaying (replaying.go), draining and live
// (handover.go). Nothing else asks which phase it is: the replaying
// driver swaps in the draining one where the log ends, and the draining
// one swaps in the live one at the next delivery point (or back to
// replaying across a backup's Handover), as raft's becomeFollower sets
// its step function once. The rule that the TSC never runs backwards
// nor stands still is one type (virtualTSC), used by the recorder and by
// every phase of the replayer; a recorder that continues a log gets its
// position through RecorderConfig.From.
//
// # Usage
//
// To a file and back, in one call each:
//
//	guest, _ := PrepareLinux(vmlinux, initrd, cmdline) // or PrepareBare(image)
//	res, err := RecordFile(ctx, "run.log", guest, FileConfig{Console: os.Stdout})
//	res, err = ReplayFile(ctx, "run.log", guest, FileConfig{})
//
// Prepare* patch the guest's rdtsc sites (package tscpatch) so its TSC
// reads are logged; RecordFile writes the header once the VM is loaded
// and renames the log into place when it ends whole. With a Sink or
// Source of your own (an FT channel, memory), drive the VM yourself.
//
// Record:
//
//  1. r, _ := NewRecorder(RecorderConfig{Sink: sink})
//  2. vm, _ := vmm.New(vmm.Config{Spec: spec, Options: vmm.Options{Driver: r}})
//     (the VM takes its clock and the dirty log from r);
//  3. load the guest, write NewHeader(vm, ...) first in the log, vm.Run.
//
// Replay:
//
//  1. rp, _ := NewReplayer(ReplayerConfig{Source: src})
//  2. create a VM with the same Spec and Driver rp, load the same guest,
//     compare headers (logio.CompareHeaders), vm.Run: it ends with the
//     recorded result or a *DivergenceError naming the first event that
//     disagreed.
//
// # Go-live
//
// ReplayerConfig.GoLive makes the end of the Source a handover to host
// inputs instead of an error (an FT backup whose primary died). The
// handover (handover.go) happens only at a delivery point, once every
// received event is replayed: at the next Deliver, Halted or Stop, never
// inside a device's clock read. If the log ended in the middle of an
// exit's handling, the rest of that exit runs without the log: the clock
// stands at its last logged reading and each rdtsc reads one tick more
// than the last. After the handover the clock continues from there on
// host time, the TSC never runs backwards, and DMA transfers the log had
// not completed are started on their backend.
//
// # The log of a whole run
//
// With ReplayerConfig.Continue the replay records what it runs after the
// handover: a Handover event (the point, the machine's fingerprint there,
// why), numbered on from the last event replayed, then what a Recorder
// logs. The events the replay read followed by those make one log of the
// run across the failover. A Replayer reading such a log treats the
// Handover like the end of a go-live log (it runs the rest of the exit
// without the log, exactly as the backup did), checks at the handover
// point that it stands where the backup went live and in the same state,
// and replays the backup's events from there.
package replay
