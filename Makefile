# recorder: Matrix group call recorder.
#   make demo   - run the recorder against a local Dendrite (installs what it needs)
#   make test   - install what the tests need, lint, run every test

SHELL := /bin/bash
GO ?= go
TAGS := goolm
STATICCHECK_VERSION := v0.8.2
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.Tag=$(VERSION) -X main.Commit=$(COMMIT) -X main.BuildTime=$(BUILD_TIME)

# The suite must stay well under CI's limit on 2 cores.
TEST_TIMEOUT ?= 15m

.PHONY: all build run demo test tools deps dendrite staticcheck jsclient lint vet fmt-check unit clean

all: build

build:
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/recorder ./cmd/recorder

run: build
	./bin/recorder -c config.yaml

demo: deps dendrite build
	scripts/demo.sh

deps:
	scripts/deps.sh

dendrite:
	scripts/homeserver.sh install

staticcheck:
	@if [[ "$$($(TOOLS_BIN)/staticcheck -version 2>/dev/null)" != *"$(STATICCHECK_VERSION:v%=%)"* ]]; then \
		echo "Installing staticcheck $(STATICCHECK_VERSION)"; \
		GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi

jsclient:
	scripts/jsclient.sh

tools: deps dendrite staticcheck jsclient

fmt-check:
	@out="$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))"; if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags $(TAGS),integration ./...

lint: fmt-check vet staticcheck
	$(TOOLS_BIN)/staticcheck -tags $(TAGS),integration ./...

# Unit and integration tests in one run (integration tests need Dendrite,
# PostgreSQL and the media tools, which `tools` installs).
test: tools lint
	$(GO) test -tags $(TAGS),integration -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# Unit tests only: no homeserver needed.
unit:
	$(GO) test -tags $(TAGS) -race -count=1 ./...

clean:
	rm -rf bin
