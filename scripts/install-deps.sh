#!/usr/bin/env bash
# Installs everything the demo and the test suite need on a fresh Debian
# machine: Debian packages and pinned Go tools (into ./bin). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
STATICCHECK_VERSION=v0.8.2

need_pkgs=()
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
# go test -race needs cgo and a C toolchain; the staleness check and the
# demo need git and tar; the Go download below needs curl and CA roots.
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
command -v tar >/dev/null 2>&1 || need_pkgs+=(tar)
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The Go toolchain go.mod asks for, when none is installed: the official
# release tarball into /usr/local/go (or ./.go without root).
GO_VERSION=$(awk '/^go /{print $2}' go.mod)
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  elif [ -x .go/bin/go ]; then
    export PATH="$PWD/.go/bin:$PATH"
  else
    arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
    echo "install-deps: downloading Go ${GO_VERSION} (${arch})"
    dest=.go
    [ "$(id -u)" = 0 ] && dest=/usr/local/go
    mkdir -p "$dest"
    curl -fsSL "https://go.dev/dl/go${GO_VERSION}.linux-${arch}.tar.gz" | tar -xz -C "$dest" --strip-components=1
    export PATH="$PWD/.go/bin:/usr/local/go/bin:$PATH"
  fi
fi

mkdir -p bin
export GOBIN="$PWD/bin"
[ -x bin/protoc-gen-go ] || go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
[ -x bin/protoc-gen-go-grpc ] || go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
[ -x bin/staticcheck ] || go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
