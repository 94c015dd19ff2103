#!/usr/bin/env bash
# The one test command: installs what it needs, then checks generated code,
# formatting, vet and staticcheck, runs every test with the race detector
# (the e2e suite included: it skips without a Docker engine unless
# CLAWKER_E2E=1), then each fuzz target for a bounded time.
#
#   ./scripts/test.sh                 # everything
#   FUZZTIME=0 ./scripts/test.sh      # skip fuzzing
#   TEST_PKGS=./internal/... ./scripts/test.sh   # a subset (default ./...)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

./scripts/install-deps.sh
export PATH="$ROOT/bin:$ROOT/.go/bin:/usr/local/go/bin:$PATH"
# An execution count, not a duration: a timed -fuzztime can end with a
# spurious "context deadline exceeded" failure when the clock runs out while
# a worker is mid-input, which would make CI flaky.
FUZZTIME=${FUZZTIME:-100000x}
TEST_TIMEOUT=${TEST_TIMEOUT:-20m}
# The engine suites serialise on one lock (fixed Docker names), and a
# package's wait for it counts against its go test timeout.
ENGINE_TIMEOUT=${ENGINE_TIMEOUT:-50m}
TEST_PKGS=${TEST_PKGS:-./...}

step() { printf '\n== %s\n' "$*"; }

step "generated code is up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protos=$(find api -name '*.proto' | sort)
protoc -I . --plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" \
  --plugin=protoc-gen-go-grpc="$(go tool -n protoc-gen-go-grpc)" \
  --go_out="$tmp" --go_opt=paths=source_relative \
  --go-grpc_out="$tmp" --go-grpc_opt=paths=source_relative $protos
stale=0
while IFS= read -r f; do
  rel=${f#"$tmp"/}
  if ! cmp -s "$f" "$rel"; then
    echo "stale: $rel (run make generate)" >&2
    stale=1
  fi
done < <(find "$tmp" -name '*.go')
[ "$stale" = 0 ]

step "command reference is up to date"
CGO_ENABLED=0 go run ./cmd/clawker gen-docs "$tmp/reference"
CGO_ENABLED=0 go run ./cmd/clawker-kube gen-docs "$tmp/reference/kubernetes"
if ! diff -r -q "$tmp/reference" docs/reference; then
  echo "docs/reference is stale: run make docs" >&2
  exit 1
fi

step "gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.go/*' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
  echo "not gofmt'ed:" >&2
  echo "$unformatted" >&2
  exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
go tool staticcheck ./...

step "go test -race"
# The suites on the real engine (test/...) run verbose so the figures they
# print (attack tallies, soak before/after, latencies) land in the CI log.
pkgs=$(go list $TEST_PKGS)
unit=$(grep -v '/test/' <<<"$pkgs" || true)
kube=$(grep '/test/kube$' <<<"$pkgs" || true)
engine=$(grep '/test/' <<<"$pkgs" | grep -v '/test/kube$' || true)
[ -z "$unit" ] || CGO_ENABLED=1 go test -race -count=1 -timeout "$TEST_TIMEOUT" $unit
[ -z "$engine" ] || CGO_ENABLED=1 go test -race -count=1 -v -timeout "$ENGINE_TIMEOUT" $engine

if [ -n "$kube" ]; then
  # Agents as pods, on a real single-node cluster that kube-up.sh builds
  # (cached in .cache/kube) and starts. It runs after the Docker suites so
  # neither its build nor its kubelet shares the cores with their timings.
  # CLAWKER_KUBE=0 leaves the cluster out: the suite then skips, or fails
  # under CLAWKER_E2E=1.
  step "agents as pods (scripts/kube-up.sh, test/kube)"
  kube_started=0
  if [ "${CLAWKER_KUBE:-1}" != 0 ]; then
    # Armed before kube-up: a half-started cluster is torn down too.
    trap 'rm -rf "$tmp"; ./scripts/kube-down.sh' EXIT
    if ./scripts/kube-up.sh; then
      kube_started=1
      # shellcheck disable=SC1091
      . "${CLAWKER_KUBE_CACHE:-.cache/kube}/run/env"
    fi
  fi
  CGO_ENABLED=1 go test -race -count=1 -v -timeout "$ENGINE_TIMEOUT" $kube
  if [ "${CLAWKER_KUBE:-1}" != 0 ]; then
    ./scripts/kube-down.sh
    trap 'rm -rf "$tmp"' EXIT
  fi
  [ "$kube_started" = 1 ] || echo "(no cluster: the suite above skipped, or failed under CLAWKER_E2E=1)"
fi

if [ "$FUZZTIME" != 0 ]; then
  step "fuzz ($FUZZTIME per target)"
  # Every `func FuzzXxx(f *testing.F)` in the module, run one at a time
  # (go test -fuzz takes one target per package invocation).
  grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | grep -v '^./.go/' | sort |
    while IFS= read -r file; do
      pkg="./$(dirname "${file#./}")"
      grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | cut -d' ' -f2 | while IFS= read -r target; do
        echo "fuzz $pkg $target"
        go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
      done
    done
fi

step "all checks passed"
