// Package suite is ftkvm's replay-divergence test suite. Each test runs a
// bare guest that stresses one source of nondeterminism — timer interrupts
// inside loops whose registers repeat, interrupts inside rep movs, PIT
// reads, rdtsc/rdtscp, console input — records it under randomized host
// timing (random kick latencies, a busy second core), and replays the log
// several times: every replay must reach the recorded console output and
// final machine fingerprint. Negative tests feed the replayer damaged,
// reordered, tampered and foreign logs and require a clear error.
//
// `go test ./replay/suite/` is the suite. Check runs the same record,
// replay and divergence checks on a guest of the caller's own (prepared
// with replay.PrepareBare or replay.PrepareLinux), with the markers its
// console must show.
package suite
