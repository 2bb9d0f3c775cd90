# ftkvm — top-level targets. `make demo` and `make test` work on a fresh
# machine (root, Go and gcc): the guest build installs its Debian packages,
# `go` fetches modules from the module proxy.

GO        ?= go
GUEST_DIR ?= $(CURDIR)/guest/out
BIN       := $(CURDIR)/bin
export FTKVM_GUEST_DIR := $(GUEST_DIR)

.PHONY: all build guest demo test test-unit bench lint proto clean

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
# The plain single-VM boot is `bin/ftvm run`.
demo: build guest
	$(BIN)/ftvm demo

# Everything, including the end-to-end Linux boot (run once, in ./e2e).
test: build guest
	$(GO) vet ./...
	FTKVM_REQUIRE_GUEST=1 $(GO) test -count=1 -timeout 40m ./...

# Tests that need neither KVM nor the Linux guest.
test-unit:
	$(GO) test -count=1 -short ./...

# Figures, measured side by side in one run each (see README).
bench: build guest
	$(GO) run ./cmd/bench-logchannel
	$(BIN)/ftvm record -q -o $(BIN)/linux.log > /dev/null
	$(GO) run ./cmd/bench-logchannel -log $(BIN)/linux.log
	$(GO) run ./cmd/bench-replay
	$(GO) run ./cmd/bench-ft

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

# Regenerate the event log's Go code (needs protoc and protoc-gen-go).
proto:
	protoc --go_out=. --go_opt=paths=source_relative replay/logpb/log.proto

clean:
	rm -rf $(BIN) $(GUEST_DIR)
