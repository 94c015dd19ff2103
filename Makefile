# clawker — build, generate, test. See README.md.
SHELL := /bin/bash
export PATH := $(CURDIR)/bin:$(PATH)
export CGO_ENABLED := 0

PROTOS := api/agent/v1/agent.proto api/clawkerd/v1/clawkerd.proto api/admin/v1/admin.proto

.PHONY: deps build generate check-generated lint test e2e demo docs bench bench-kube clean

deps:
	./scripts/install-deps.sh

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

build:
	mkdir -p bin
	go build -ldflags "-X github.com/clawker/clawker/internal/version.Version=$(VERSION)" -o bin/ ./cmd/...

# The protoc plugins are go.mod tool directives; `go tool -n` builds one
# (cached) and prints its path.
generate: deps
	protoc -I . --plugin=protoc-gen-go="$$(go tool -n protoc-gen-go)" \
	  --plugin=protoc-gen-go-grpc="$$(go tool -n protoc-gen-go-grpc)" \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

# Fails when the checked-in generated code differs from a fresh generation.
check-generated: generate
	git diff --exit-code -- api/ || (echo "generated code is stale: run make generate" >&2; exit 1)

lint: deps
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	go vet ./...
	go tool staticcheck ./...

test:
	./scripts/test.sh

# The end-to-end suite alone, mandatory (fails without a Docker engine).
e2e:
	CGO_ENABLED=1 CLAWKER_E2E=1 go test -race -count=1 -v ./test/e2e/

demo:
	./scripts/demo.sh

# The command reference, generated from the cobra tree.
docs: build
	rm -rf docs/reference
	./bin/clawker gen-docs docs/reference
	./bin/clawker-kube gen-docs docs/reference/kubernetes

# The benchmark report (bench/REPORT.md, bench/report.json). It owns the
# fixed CP names while it runs, hence the docker lock. Quick mode e.g.:
#   make bench BENCH_FLAGS='-agents 10 -fanout 30 -gate 10,100'
bench:
	go run ./bench -profile bench/profiles $(BENCH_FLAGS)

# Figure 8, agents as pods, into bench/kube/: needs the test cluster
# (sudo scripts/kube-up.sh; source .cache/kube/run/env).
bench-kube:
	go run ./bench -kube -out bench/kube $(BENCH_FLAGS)

clean:
	rm -rf bin
