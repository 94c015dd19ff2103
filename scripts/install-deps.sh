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
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi


mkdir -p bin
export GOBIN="$PWD/bin"
[ -x bin/protoc-gen-go ] || go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
[ -x bin/protoc-gen-go-grpc ] || go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
[ -x bin/staticcheck ] || go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
