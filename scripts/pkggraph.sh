#!/usr/bin/env bash
# Prints the module's package graph (non-test imports inside the module),
# one package a line with what it imports, for docs/architecture.md:
#   ./scripts/pkggraph.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
go list -f '{{.ImportPath}}{{range .Imports}} {{.}}{{end}}' ./... |
  grep -v -E '/test/|/bench/|/internal/testenv' |
  awk -v m="$mod/" '{
    p=$1; sub(m,"",p); deps=""
    for (i=2;i<=NF;i++) if (index($i,m)==1) { d=$i; sub(m,"",d); deps=deps (deps==""?"":", ") d }
    printf "%-34s -> %s\n", p, (deps==""?"(none)":deps)
  }'
