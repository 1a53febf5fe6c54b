# rollout — see README.md. `make test` and `make demo` need root on Debian
# (systemd-nspawn test hosts); `make deps` installs what they need.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO ?= go
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# A count of inputs, not a duration: Go 1.26's fuzzer can fail a run bounded
# by time with a spurious "context deadline exceeded" as the time runs out
# (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 60000x

GORELEASER_VERSION := v2.15.1
ACTIONLINT_VERSION := v1.7.12
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: build install test unit fuzz e2e bench demo lint deps clean release-extras release-snapshot

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/rollout ./cmd/rollout

install:
	$(GO) install -ldflags "$(LDFLAGS)" ./cmd/rollout

# Everything: lint, unit tests with the race detector, the fuzz tests, then
# the real-host tests.
test: deps lint unit fuzz release-snapshot e2e

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

# Each fuzz test for FUZZTIME (make fuzz FUZZTIME=2000000x); go test -fuzz takes
# one at a time. Failing inputs stay in deployer/testdata/fuzz as seeds.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./deployer/
	$(GO) test -run '^$$' -fuzz '^FuzzUpstreamEdit$$' -fuzztime $(FUZZTIME) ./deployer/

# Real hosts: boots systemd-nspawn containers (root). One package at a time:
# they share the machine's testbed.
e2e: deps
	$(GO) test -count=1 -p 1 -timeout 60m ./e2e/...

bench: deps
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./e2e/ ./internal/simhost/

demo: deps build
	$(GO) run ./e2e/cmd/demo

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...
	shellcheck -s sh deployer/scripts/*.sh
	shellcheck -s bash e2e/testbed/*.sh
	@test -x $(GOBIN)/actionlint || $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	$(GOBIN)/actionlint -shellcheck shellcheck examples/github-actions/*.yml
	ROLLOUT_REQUIRE_ACTIONLINT=1 $(GO) test -count=1 -run '^TestActionLint$$' ./cmd/rollout/

# Debian packages the testbed, lint and the browser test need (idempotent; quiet when present).
deps:
	@if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null || ! command -v ip >/dev/null || ! command -v shellcheck >/dev/null || ! command -v nft >/dev/null || ! command -v chromium >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container debootstrap iproute2 shellcheck nftables chromium >/dev/null; \
	fi
	@$(GO) mod download
	@test -x $(GOBIN)/goreleaser || $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)

# The man page and shell completions the archives and packages ship.
release-extras: build
	mkdir -p build/extras
	bin/rollout man | gzip -9n >build/extras/rollout.1.gz
	bin/rollout completion bash >build/extras/rollout.bash
	bin/rollout completion zsh >build/extras/_rollout
	bin/rollout completion fish >build/extras/rollout.fish

# Every archive and package of a release, into dist/, without a tag or
# publishing anything (goreleaser, pinned, from make deps).
release-snapshot: deps
	$(GOBIN)/goreleaser release --snapshot --clean

clean:
	rm -rf bin build dist
