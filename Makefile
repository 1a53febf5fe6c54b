# rollout — see README.md. `make demo` and `make test` need root on Debian
# (systemd-nspawn test hosts); each installs what it needs, and no more:
# the demo the testbed's packages, the tests also the linters and Chromium.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO ?= go
# A count of inputs, not a duration: Go 1.26's fuzzer can fail a run bounded
# by time with a spurious "context deadline exceeded" as the time runs out
# (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 60000x

# Debian packages: what the local fleet needs (make demo), and what the
# tests add (shellcheck for the scripts, Chromium for the dashboard test,
# sudo for visudo, which checks the helper's sudoers file).
DEMO_PKGS := systemd-container debootstrap iproute2 nftables
TEST_PKGS := shellcheck chromium sudo
# make bench installs PM2 from npm for its PM2 peer (build/bench).
BENCH_PKGS := npm

# Go tools, pinned in tools/tools.mod (apart from go.mod, so they never
# change what rollout is built with), built into build/tools.
TOOLBIN := $(CURDIR)/build/tools
TOOLMOD := -modfile=tools/tools.mod
export PATH := $(TOOLBIN):$(PATH)
# A test that cannot run here (no root, a command missing) fails instead of
# skipping (internal/testenv); make deps installs what they need.
export ROLLOUT_STRICT ?= 1
GOTESTSUM := $(TOOLBIN)/gotestsum

.PHONY: build install test unit fuzz e2e e2e-durations bench demo lint deps deps-demo tools dist clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/rollout ./cmd/rollout

install:
	$(GO) install -ldflags "$(LDFLAGS)" ./cmd/rollout

# Everything, stage by stage, each one timed: what the tests need, lint,
# unit tests with the race detector, the fuzz tests, the real-host tests.
test:
	@tools/stages.sh deps lint unit fuzz e2e

# Every package but the real-host tests, with the race detector; a line
# per package with its time.
unit: deps
	$(GOTESTSUM) --format pkgname-and-test-fails --format-hide-empty-pkg -- -race -count=1 $$($(GO) list ./... | grep -v /e2e)

# Each fuzz test for FUZZTIME (make fuzz FUZZTIME=2000000x); go test -fuzz takes
# one at a time. Failing inputs stay in deployer/testdata/fuzz as seeds.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./deployer/
	$(GO) test -run '^$$' -fuzz '^FuzzUpstreamEdit$$' -fuzztime $(FUZZTIME) ./deployer/
	$(GO) test -run '^$$' -fuzz '^FuzzFormatRoundTrips$$' -fuzztime $(FUZZTIME) ./internal/secrets/

# Real hosts (root): several go test processes at once, each on a testbed of
# its own: the e2e package in E2E_SHARDS shares on Debian 12, the core tests
# on Debian 11 and 13 (tools/e2e.sh). A line per test as it ends, then every
# test's time, slowest first (build/e2e/*.json keeps them). E2E_RUN=REGEX
# runs only those tests.
e2e: deps
	@tools/e2e.sh

# testdata/durations.tsv again from the last make e2e (it balances the shares).
e2e-durations:
	@{ printf '# Seconds each e2e test took (make e2e on a 2-core machine), to balance\n# the shards make e2e runs at once (shard_test.go). A test missing here\n# counts 30 s; make e2e-durations writes this file again from the last run.\n'; \
		cat build/e2e/e2e-*.json | gotestsum tool slowest --threshold 1ms | awk -v job=- -f tools/seconds.awk | \
		awk '$$3 !~ /\// {printf "%s\t%.1f\n", $$3, $$1}' | sort; } >e2e/testdata/durations.tsv.new
	@mv e2e/testdata/durations.tsv.new e2e/testdata/durations.tsv

bench: deps-demo
	@tools/apt-need.sh $(BENCH_PKGS)
	ROLLOUT_TRAEFIK=$$(tools/traefik.sh) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./e2e/ ./internal/simhost/

demo: deps-demo build
	$(GO) run ./e2e/cmd/demo

lint: deps
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	staticcheck ./...
	shellcheck -s sh deployer/scripts/*.sh
	shellcheck -s bash e2e/testbed/*.sh tools/*.sh .ci/run
	actionlint -shellcheck shellcheck examples/github-actions/*.yml
	$(GO) test -count=1 -run '^TestActionLint$$' ./cmd/rollout/

# What the local fleet needs: enough for make demo and make bench.
deps-demo:
	@tools/apt-need.sh $(DEMO_PKGS)
	@$(GO) mod download

# What the tests need on top (idempotent; quiet when present).
deps: deps-demo tools
	@tools/apt-need.sh $(TEST_PKGS)

tools: $(TOOLBIN)/staticcheck $(TOOLBIN)/actionlint $(TOOLBIN)/gotestsum

$(TOOLBIN)/staticcheck: tools/tools.mod tools/tools.sum
	$(GO) build $(TOOLMOD) -o $@ honnef.co/go/tools/cmd/staticcheck
$(TOOLBIN)/actionlint: tools/tools.mod tools/tools.sum
	$(GO) build $(TOOLMOD) -o $@ github.com/rhysd/actionlint/cmd/actionlint
$(TOOLBIN)/gotestsum: tools/tools.mod tools/tools.sum
	$(GO) build $(TOOLMOD) -o $@ gotest.tools/gotestsum

# Every archive and package of a release (linux and darwin, amd64 and
# arm64; .deb and .rpm), and checksums.txt, into dist/: named by the version
# git gives this commit; nothing is published (internal/dist).
dist:
	rm -rf dist
	$(GO) run ./internal/dist/cmd/dist -out dist

clean:
	rm -rf bin build dist
