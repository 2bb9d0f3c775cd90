// Package twohost holds the end-to-end tests of the FT pair across two
// emulated hosts (package testbed): silent death of either host at random
// points of bare and Linux guests, network partitions, loss of the shared
// storage and refused backups. make test runs them in a stage of their own
// (FTKVM_TWOHOST=1); the test binary runs on this machine and boots two
// hosts per test.
package twohost
