#!/usr/bin/env bash
# kube-load-image.sh: copy images from the local Docker engine into the
# cluster started by kube-up.sh, so that pods can use them (nothing can be
# pulled from a registry here).
#
#   scripts/kube-load-image.sh IMAGE [IMAGE...]
#
# The images land in the cluster's own containerd, namespace k8s.io (the one
# the CRI plugin serves to the kubelet), under the names Docker knows them by
# (docker.io/library/ prefixed for short names, as Kubernetes resolves them).
# Use a tag other than :latest, or imagePullPolicy: IfNotPresent/Never, in
# pod specs: with :latest the kubelet would try to pull.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=kube/lib.sh
source "$SCRIPTS_DIR/kube/lib.sh"

(($#)) || die "usage: $0 IMAGE [IMAGE...]"
[[ $EUID -eq 0 ]] || die "must run as root (the cluster's containerd socket is root-only)"
if ! [[ -S $CONTAINERD_SOCK ]] || ! kctr version >/dev/null 2>&1; then
	die "the cluster's containerd is not running ($CONTAINERD_SOCK); run scripts/kube-up.sh first"
fi

for img in "$@"; do
	docker image inspect "$img" >/dev/null 2>&1 || die "no such image in Docker: $img"
done

# normalize NAME prints the fully qualified reference containerd stores and
# the kubelet asks for: busybox:1 -> docker.io/library/busybox:1.
normalize() {
	local ref=$1 first=${1%%/*}
	if [[ $ref != */* ]]; then
		ref=docker.io/library/$ref
	elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
		ref=docker.io/$ref
	fi
	# No tag (and no digest): Docker's default tag.
	[[ ${ref##*/} == *:* || $ref == *@* ]] || ref=$ref:latest
	echo "$ref"
}

t0=$SECONDS
# One archive for all images: shared layers are written and imported once.
# Streamed through a pipe, so nothing large is written to disk. ctr unpacks
# into the overlayfs snapshotter that the CRI plugin uses.
docker save "$@" | kctr images import - >/dev/null
present=$(kctr images ls -q)
for img in "$@"; do
	grep -qxF "$(normalize "$img")" <<<"$present" || die "$img is not in the cluster after import"
done
log "loaded $* in $((SECONDS - t0))s"
