// Package e2e holds ftkvm's end-to-end tests: they build the ftvm binary
// and boot the example Linux guest (guest/out, built by `make guest`)
// through it. They are the slow tests, so they live in one package and run
// once per `make test`. Without a built guest they skip, unless
// FTKVM_REQUIRE_GUEST=1 (as `make test` sets) makes that a failure.
package e2e
