# ftkvm — top-level targets. `make demo` and `make test` work on a fresh
# machine (root, Go and gcc): the guest build installs its Debian packages,
# `go` fetches modules from the module proxy.

GO        ?= go
GUEST_DIR ?= $(CURDIR)/guest/out
BIN       := $(CURDIR)/bin
export FTKVM_GUEST_DIR := $(GUEST_DIR)

.PHONY: all build guest demo test soak test-unit bench lint proto clean

all: build

build:
	$(GO) build -o $(BIN)/ftvm ./examples/ftvm

# The example guest (tiny Linux + busybox initramfs), cached by input hash.
guest:
	guest/build.sh $(GUEST_DIR)

# The FT pair on this machine: backup and primary on loopback, a temporary
# directory as shared storage, the example Linux guest; the primary is
# killed with SIGKILL partway and the backup takes over. `bin/ftvm demo
# --chatter` does the same with a bare guest that prints numbered lines.
# The plain single-VM boot is `bin/ftvm run`. Without /dev/kvm it runs in an
# emulated KVM host (QEMU TCG + kvm_amd, package testbed): scripts/demo.sh.
demo: build guest
	GO=$(GO) scripts/demo.sh

# Everything, including the end-to-end Linux boot (run once, in ./e2e):
# go vet, all tests here, and without /dev/kvm the KVM packages' tests again
# in one emulated KVM host (QEMU TCG + kvm_amd, package testbed). See
# scripts/test.sh.
test: build guest
	GO=$(GO) scripts/test.sh

# make test with every kill-point sweep at its full size (make test samples
# a few points per sweep, different ones each run, the seed printed): about
# twice make test's time, so the stage limits are raised to match.
soak: build guest
	FTKVM_SOAK=1 FTKVM_KVM_STAGE_TIMEOUT=$${FTKVM_KVM_STAGE_TIMEOUT:-90m} \
	FTKVM_TWOHOST_TIMEOUT=$${FTKVM_TWOHOST_TIMEOUT:-100m} GO=$(GO) scripts/test.sh

# Tests that need neither KVM nor the Linux guest.
test-unit:
	$(GO) test -count=1 -short ./...

# Figures, measured side by side in one run each (see README); without
# /dev/kvm the KVM ones run in an emulated KVM host: scripts/bench.sh.
bench: build guest
	GO=$(GO) scripts/bench.sh

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

# Regenerate the event log's Go code (needs protoc and protoc-gen-go).
proto:
	protoc --go_out=. --go_opt=paths=source_relative replay/logpb/log.proto

clean:
	rm -rf $(BIN) $(GUEST_DIR)
