# Hangar's developer gate. Every Go command loops over the modules
# (scripts/modules.sh): a root `go test ./...` would reach none of them.

SHELL := /usr/bin/env bash
BIN   := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
GOLANGCI_LINT_VERSION      := v2.15.0

.PHONY: all dev setup test test-short lint generate generate-check tidy tidy-check work-check check bench tools build images

all: check

## dev: the one-machine demo (embedded broker, S3, the four services, a run)
dev:
	go run ./cmd/hangarctl dev

## setup: install, when missing, the Debian packages the tests need (idempotent, silent when all is there)
setup:
	scripts/setup.sh

## test: set-up, then every test of every module, with the race detector, each module alone
test: setup
	scripts/test.sh

## build: every binary into bin/
build:
	scripts/build.sh

## lint: gofmt, go vet, golangci-lint (import boundaries), buf lint
lint: tools
	@unformatted=$$(git ls-files '*.go' | xargs gofmt -l); \
	  if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi
	scripts/for-modules.sh go vet ./...
	scripts/for-modules.sh $(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...
	$(BIN)/buf lint

## generate: regenerate gen/go from proto/
generate: tools
	$(BIN)/buf generate

## generate-check: the committed generated code is what proto/ generates; no breaking change against main
generate-check: generate
	@git diff --exit-code -- gen/go || { echo "gen/go is stale: run make generate and commit"; exit 1; }
	@if git rev-parse --verify -q main >/dev/null && [ "$$(git rev-parse main)" != "$$(git rev-parse HEAD)" ] \
	    && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  $(BIN)/buf breaking --against '.git#branch=main'; fi

## tidy: go mod tidy in every module
tidy:
	scripts/for-modules.sh go mod tidy

tidy-check: tidy
	@git diff --exit-code -- '*.mod' '*.sum' || { echo "go.mod/go.sum not tidy: run make tidy and commit"; exit 1; }

work-check:
	scripts/update-go-work.sh
	@git diff --exit-code -- go.work || { echo "go.work is stale: run scripts/update-go-work.sh"; exit 1; }

## check: everything CI checks
check: lint generate-check tidy-check work-check test

## images: one image per service and hangarctl (static binaries on scratch; no pull needed)
images:
	scripts/images.sh

## bench: benchmarks, printed as tables
bench:
	bench/run.sh

## tools: pinned code generators and linters into bin/ (git-ignored)
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/golangci-lint

$(BIN)/buf:
	GOBIN=$(BIN) GOWORK=off go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) GOWORK=off go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) GOWORK=off go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/golangci-lint:
	GOBIN=$(BIN) GOWORK=off go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
