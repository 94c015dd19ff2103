#!/usr/bin/env bash
# Installs everything the demo and the test suite need on a fresh Debian
# machine: Debian packages and the Go tools pinned by go.mod's tool
# directives (`go tool …`). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
# The terminal e2e tests (exec -it, run -it) drive clawker inside tmux.
command -v tmux >/dev/null 2>&1 || need_pkgs+=(tmux)
# go test -race needs cgo and a C toolchain; the staleness check and the
# demo need git and tar; the Go download below needs curl and CA roots.
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
# The credential e2e tests put the host's git and ssh into an agent image.
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
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

# The Go tools are go.mod's tool directives, so their versions are go.mod's
# (`go get -tool pkg@version` changes one). `go tool -n` fetches and builds
# each into the build cache and prints its path, which protoc's --plugin
# takes; nothing is installed into ./bin, so no stale binary can shadow a pin.
for t in protoc-gen-go protoc-gen-go-grpc staticcheck; do
  go tool -n "$t" >/dev/null
done
