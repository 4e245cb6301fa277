# recorder: Matrix group call recorder.
#   make demo   - run the recorder against a local Dendrite (installs what it needs)
#   make test   - install what the tests need, lint, check for known vulnerabilities, run every test
#   make fuzz   - run every fuzz target of the repo for FUZZTIME each (default 30s)
#   make bench  - writer benchmarks, then the load tool (BENCH_N points) into BENCH_OUT

SHELL := /bin/bash
GO ?= go
TAGS := goolm
STATICCHECK_VERSION := v0.8.2
GOVULNCHECK_VERSION := v1.9.0
# The Go vulnerability database; file:///path uses an offline copy.
GOVULNDB ?=
FUZZTIME ?= 30s
# How long the fuzzer may minimize a new input. Its default (60s per input)
# stalls targets that do file I/O for most of a short run.
FUZZMINIMIZETIME ?= 200x
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.Tag=$(VERSION) -X main.Commit=$(COMMIT) -X main.BuildTime=$(BUILD_TIME)

# The suite must stay well under CI's limit on 2 cores.
TEST_TIMEOUT ?= 15m

# make bench: participants per load point, call size, warm-up, window, report.
BENCH_N ?= 10,50
BENCH_CALL_SIZE ?= 5
BENCH_WARMUP ?= 10s
BENCH_WINDOW ?= 30s
BENCH_OUT ?= loadtest-report.md
BENCH_NICE ?= nice -n 5
# BENCH_FLAGS=-matrixrtc measures MatrixRTC calls on a local LiveKit SFU.
BENCH_FLAGS ?=

.PHONY: all build run demo test bench tools deps dendrite livekit staticcheck govulncheck vulncheck fuzz jsclient lint vet fmt-check unit clean

all: build

build:
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/recorder ./cmd/recorder

run: build
	./bin/recorder -c config.yaml

demo: deps dendrite livekit build
	scripts/demo.sh

deps:
	scripts/deps.sh

dendrite:
	scripts/homeserver.sh install

# The LiveKit SFU of the MatrixRTC tests and demo.
livekit:
	scripts/livekit.sh install

staticcheck:
	@if [[ "$$($(TOOLS_BIN)/staticcheck -version 2>/dev/null)" != *"$(STATICCHECK_VERSION:v%=%)"* ]]; then \
		echo "Installing staticcheck $(STATICCHECK_VERSION)"; \
		GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi

govulncheck:
	@if [[ "$$($(TOOLS_BIN)/govulncheck -version 2>/dev/null)" != *"govulncheck@$(GOVULNCHECK_VERSION)"* ]]; then \
		echo "Installing govulncheck $(GOVULNCHECK_VERSION)"; \
		GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION); \
	fi

# Known vulnerabilities in the code paths the recorder calls (module
# dependencies and the standard library). Needs the vulnerability database:
# set GOVULNDB to its URL (https://vuln.go.dev) or to a file:// copy. This
# workplace reaches no such host, so without GOVULNDB the check says SKIPPED
# and passes (and sends nothing anywhere), unless VULNCHECK_REQUIRED=1.
vulncheck: govulncheck
	@if [[ -z "$(GOVULNDB)" ]]; then \
		echo "vulncheck: SKIPPED: set GOVULNDB to the vulnerability database (URL or file:// copy) to run govulncheck"; \
		[[ -z "$(VULNCHECK_REQUIRED)" ]]; \
	else \
		$(TOOLS_BIN)/govulncheck -db "$(GOVULNDB)" -tags $(TAGS),integration ./...; \
	fi

# Every fuzz target runs for FUZZTIME; a crash stops the run and leaves
# its input in the package's testdata/fuzz/FuzzXxx, where `go test` replays it.
fuzz:
	GO=$(GO) TAGS=$(TAGS) FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) scripts/fuzz.sh

jsclient:
	scripts/jsclient.sh

tools: deps dendrite livekit staticcheck govulncheck jsclient

fmt-check:
	@out="$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))"; if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags $(TAGS),integration ./...

lint: fmt-check vet staticcheck
	$(TOOLS_BIN)/staticcheck -tags $(TAGS),integration ./...

# Unit and integration tests in one run (integration tests need Dendrite,
# PostgreSQL and the media tools, which `tools` installs).
test: tools lint vulncheck
	$(GO) test -tags $(TAGS),integration -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# Writer benchmarks (allocations per packet), then the load tool against a
# loopback Dendrite: recorder vs. the same-run bare pion baseline. Numbers
# taken on a busy machine are contended; see BENCHMARKS.md.
bench: dendrite livekit build
	$(BENCH_NICE) $(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem -count 6 ./recording/ | tee bench-writers.txt
	$(GO) build -tags $(TAGS) -o bin/loadtest ./cmd/loadtest
	$(BENCH_NICE) bin/loadtest -recorder bin/recorder -n $(BENCH_N) -call-size $(BENCH_CALL_SIZE) \
		-warmup $(BENCH_WARMUP) -window $(BENCH_WINDOW) $(BENCH_FLAGS) -out $(BENCH_OUT)

# Unit tests only: no homeserver needed.
unit:
	$(GO) test -tags $(TAGS) -race -count=1 ./...

clean:
	rm -rf bin
