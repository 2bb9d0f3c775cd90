// Package ft runs a VM as one side of a VMware-FT-style fault-tolerant
// pair: RunPrimary runs the guest and streams every nondeterministic input
// (a replay.Recorder) to the backup over a logchannel; RunBackup replays
// that log in lockstep (a replay.Replayer) and takes over when the primary
// dies.
//
// The rules it implements (see README.md, "FT pair"):
//
//   - Output commit: the guest's console output is logged (an Output event)
//     and held by the primary until the backup has acknowledged that log
//     entry; the vCPU keeps running meanwhile, only the bytes wait.
//   - Flow control: the log's window (Config.WindowBytes) bounds what is in
//     flight; when the backup lags the primary's vCPU waits at its next
//     exit inside the recorder's sink.
//   - Failure detection: heartbeats and log traffic on the channel; a side
//     that hears nothing for Config.Timeout declares its peer dead.
//   - Split brain: a side that lost its peer claims the pair with an atomic
//     test-and-set on shared storage (package split) before it goes live
//     (backup) or releases unacknowledged output (primary). The loser halts;
//     a side that cannot reach the storage does not go live (the primary
//     halts without releasing held output, since it cannot know whether the
//     backup went live).
//   - Authentication: the log channel runs mutual TLS 1.3 (Config.TLS;
//     package pairtls makes and loads a pair's CA and node certificates),
//     so only the pair's backup can read the guest's inputs and only its
//     primary can feed the backup a log. Plaintext needs Config.Insecure.
//   - Pairing no stranger can stall (accept.go): the primary handshakes
//     every connection on its own goroutine within a short deadline, a
//     bounded number at once (a new one evicts the oldest), so silent or
//     garbage connections to its port do not delay the real backup. The
//     backup refuses a hello or log entry that would decode to more than
//     logio.MaxDecoded before decoding it.
//   - Go-live: the backup replays every entry it received, wins the
//     test-and-set, re-sends the console output from the last Released
//     count the primary logged (duplicates allowed, losses not), and runs on
//     with live devices.
//   - A claim lost after it was won (an etcd arbiter's lease, reported on
//     its Lost channel) halts the side running on it: no more output
//     leaves, and its error wraps split.ErrLost.
//   - State for programs and people: each side reports a Status (the pair
//     state and why, the log's rate, the lag, the rolling commit delay) to
//     Config.OnStatus and Config.Monitor at every state change and every
//     Config.StatusEvery (package ftmetrics serves a Monitor as Prometheus
//     metrics and JSON), and logs through log/slog (Config.Logger).
//
// The decisions are made by pure cores, which do no IO, start no
// goroutine and read no clock, and are tested without KVM or sockets; the
// goroutines of RunPrimary and RunBackup feed them and carry out what they
// decide:
//
//   - outputCommit (commit.go): which held console output the primary may
//     let out, given the log entries appended and acknowledged and the
//     pair's state; a byte counts as released only once written out.
//   - resendLog (resend.go): the output a backup keeps while replaying, and
//     what it must send when it goes live.
//   - pairCore (pair.go): joining, declaring the peer lost, claiming the
//     pair, and what each side does on winning or losing the claim;
//     judgeClaim classifies one test-and-set attempt.
//
// failover_test.go checks them together: for random interleavings of log
// entries, outputs, acks and the primary's crash, the outside world sees
// one execution's output with at most a duplicated overlap.
//
// Both sides describe the same Guest: LinuxGuest(kernel, initrd, cmdline)
// or BareGuest(image) prepare one (its rdtsc sites patched, its header
// built), GuestOf wraps a replay.PreparedGuest. Each side builds its VM
// through a MachineFactory (Config.NewMachine; by default vmm.New with
// Guest.Load and Guest.Header) and the backup
// reaches the primary through Config.Dial (by default TCP), so the real
// RunPrimary and RunBackup, goroutines and all, run in tests over toy
// machines (internal/toyvm) and an in-memory network
// (session_test.go): the primary killed, partitions, lost and held acks,
// in milliseconds and without KVM.
//
// The channel's first entry is a hello (JSON) carrying the primary's log
// header (whose RTC epoch the backup adopts) and the split-brain
// generation; every later entry is one marshalled logpb.Event, entry N+1
// carrying event N. The channel's ConfigHash is the SHA-256 of the log
// header without its epoch, so a backup built for another VM is refused in
// the handshake.
package ft
