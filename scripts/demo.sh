#!/usr/bin/env bash
# The one demo command: build clawker, initialise a home, start the control
# plane, run two agents from a busybox image made locally (no registry),
# and show them registered and initialised.
#
#   ./scripts/demo.sh                       # uses $CLAWKER_HOME or the XDG default
#   CLAWKER_HOME=/tmp/demo ./scripts/demo.sh
#   ./scripts/demo.sh --down                # remove the demo agents and the CP
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
./scripts/install-deps.sh >/dev/null
export PATH="$ROOT/bin:$ROOT/.go/bin:/usr/local/go/bin:$PATH"

IMAGE=clawker-demo-busybox:latest
PROJECT=demo
AGENTS=(alpha beta)

if [ "${1:-}" = "--down" ]; then
  for a in "${AGENTS[@]}"; do clawker rm --force --project "$PROJECT" "$a" >/dev/null 2>&1 || true; done
  clawker cp down
  exit 0
fi

echo "== build"
make -s build

echo "== busybox image $IMAGE (Debian's busybox-static + applet links, imported)"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin" "$root/tmp" "$root/root" "$root/etc"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
  changes=(-c 'CMD ["sh"]' -c 'ENV PATH=/bin')
  # Extra labels (CLAWKER_LABELS=k=v,...) mark the image like everything
  # clawker creates, so the e2e suite's sweep finds it.
  IFS=, read -r -a extra <<< "${CLAWKER_LABELS:-}"
  for kv in "${extra[@]}"; do [ -n "$kv" ] && changes+=(-c "LABEL $kv"); done
  tar -C "$root" -cf - . | docker import "${changes[@]}" - "$IMAGE" >/dev/null
fi

echo "== clawker init"
clawker init

echo "== clawker cp up"
clawker cp up

for a in "${AGENTS[@]}"; do
  docker rm -f "clawker.$PROJECT.$a" >/dev/null 2>&1 || true
  echo "== clawker run -d --project $PROJECT --agent $a $IMAGE"
  clawker run -d --project "$PROJECT" --agent "$a" "$IMAGE" \
    sh -c "echo agent $a is up; while true; do sleep 3600; done"
done

echo "== waiting for both agents to register and initialise"
deadline=$((SECONDS + 90))
while :; do
  ready=$(clawker agents --project "$PROJECT" | awk 'NR>1 && $4=="yes" && $5=="yes" && $6=="connected" && $7=="completed"' | wc -l)
  [ "$ready" -ge "${#AGENTS[@]}" ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "agents not ready after 90s; see clawker cp logs" >&2
    clawker agents >&2
    exit 1
  fi
  sleep 0.5
done

echo "== clawker agents"
clawker agents
echo
echo "Try: clawker exec --project $PROJECT alpha -- uname -a   |   clawker events -f"
echo "Tear down: ./scripts/demo.sh --down"
