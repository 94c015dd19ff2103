# shellcheck shell=bash
# build.sh: what kube-up.sh builds before anything starts: the packages it
# needs, the Kubernetes, etcd and kube-router binaries (cached, keyed on their
# sources and the Go version) and the pause and busybox images. Sourced by
# kube-up.sh after lib.sh.

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------

# install_packages installs what is missing, by command, not by package: if
# Docker came with containerd.io, installing Debian's containerd would replace
# it, so an existing containerd binary is used as it is. (No socat: the
# port-forward of containerd 1.6's CRI plugin is written in Go.)
install_packages() {
	local -A need=(
		[containerd]=containerd [ctr]=containerd [runc]=runc
		[iptables]=iptables [ip6tables]=iptables [ipset]=ipset
		[conntrack]=conntrack [openssl]=openssl
		[curl]=curl [ip]=iproute2 [sha256sum]=coreutils
		# Only for kube-down.sh, to drop nftables tables that iptables-nft
		# created while the cluster ran.
		[nft]=nftables
	)
	local pkgs=() cmd
	for cmd in "${!need[@]}"; do
		command -v "$cmd" >/dev/null 2>&1 || pkgs+=("${need[$cmd]}")
	done
	[[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/loopback && -x $CNI_BIN_DIR/portmap ]] ||
		pkgs+=(containernetworking-plugins)
	# The busybox image needs a static binary: it runs in an empty rootfs.
	if ! [[ -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
		pkgs+=(busybox-static)
	fi
	((${#pkgs[@]})) || return 0
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	log "installing Debian packages: ${pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# ---------------------------------------------------------------------------
# Binaries (cached in $KUBE_BIN, keyed on sources, go.mod/go.sum and Go version)
# ---------------------------------------------------------------------------

VERSION_PKG=k8s.io/component-base/version
CLIENT_VERSION_PKG=k8s.io/client-go/pkg/version
# The version stamps make `kubectl version` and the node report v1.34.4
# instead of v0.0.0-master; the kubelet and apiserver compare them.
KUBE_LDFLAGS="-s -w \
 -X $VERSION_PKG.gitVersion=$KUBE_VERSION -X $VERSION_PKG.gitMajor=1 -X $VERSION_PKG.gitMinor=34 -X $VERSION_PKG.gitTreeState=clean \
 -X $CLIENT_VERSION_PKG.gitVersion=$KUBE_VERSION -X $CLIENT_VERSION_PKG.gitMajor=1 -X $CLIENT_VERSION_PKG.gitMinor=34"

build_key() {
	{
		go version
		echo "$KUBE_LDFLAGS"
		(cd "$SCRIPTS_DIR/kube" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum)
	} | sha256sum | cut -c1-16
}

build_binaries() {
	command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
	local key
	key=$(build_key)
	if [[ -f $KUBE_BIN/.key && $(<"$KUBE_BIN/.key") == "$key" ]]; then
		log "binaries up to date ($KUBE_BIN, key $key)"
		return
	fi
	log "building binaries (key $key); a cold build takes 10-20 minutes on 2 cores"
	local t0=$SECONDS tmp
	tmp=$(mktemp -d "$KUBE_CACHE/build.XXXXXX")
	chmod 0755 "$tmp"
	# GOTOOLCHAIN=local: never try to download a toolchain (no internet).
	# CGO_ENABLED=0: static binaries, like the upstream release builds.
	# GOFLAGS/GOWORK cleared so that the caller's settings cannot leak in.
	(
		export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS=
		cd "$SCRIPTS_DIR/kube"
		go build -trimpath -ldflags "$KUBE_LDFLAGS" -o "$tmp/kube" ./cmd/kube
		go build -trimpath -ldflags "-s -w" -o "$tmp/pause" ./cmd/pause
		cd "$SCRIPTS_DIR/kube/etcd"
		go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .
		cd "$SCRIPTS_DIR/kube/kube-router"
		go build -trimpath -ldflags "-s -w" -o "$tmp/kube-router" .
	) >"$tmp/build.log" 2>&1 || {
		tail -n 40 "$tmp/build.log" >&2
		die "go build failed (full log: $tmp/build.log)"
	}
	local c
	for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
		ln -s kube "$tmp/$c"
	done
	echo "$key" >"$tmp/.key"
	rm -f "$tmp/build.log"
	rm -rf "$KUBE_BIN"
	mv "$tmp" "$KUBE_BIN"
	log "built in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------------------
# Images: written as OCI image archives directly (no Docker, no registry)
# ---------------------------------------------------------------------------

# oci_blob FILE DIR moves FILE into DIR/blobs/sha256 and prints "digest size".
oci_blob() {
	local digest size
	digest=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$2/blobs/sha256/$digest"
	echo "$digest $size"
}

# make_image NAME ROOTFS CONFIG_JSON OUT writes a one-layer OCI image archive
# that `ctr images import` (and `docker load`) understand. CONFIG_JSON is the image's runtime
# "config" object (Entrypoint, Cmd, Env...).
make_image() {
	local name=$1 rootfs=$2 runcfg=$3 out=$4 work arch
	arch=$(go env GOARCH)
	work=$(mktemp -d)
	mkdir -p "$work/blobs/sha256"
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer" .
	local ldigest lsize cdigest csize mdigest msize
	read -r ldigest lsize < <(oci_blob "$work/layer" "$work")
	printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$arch" "$runcfg" "$ldigest" >"$work/config"
	read -r cdigest csize < <(oci_blob "$work/config" "$work")
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$cdigest" "$csize" "$ldigest" "$lsize" >"$work/manifest"
	read -r mdigest msize < <(oci_blob "$work/manifest" "$work")
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$mdigest" "$msize" "$arch" "$name" "${name##*:}" >"$work/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
	# Also a docker-archive manifest (as `docker save` writes since Docker 25),
	# so the same file can be `docker load`ed, e.g. to build images FROM it.
	printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":["blobs/sha256/%s"]}]' \
		"$cdigest" "$name" "$ldigest" >"$work/manifest.json"
	tar -C "$work" -cf "$out.tmp" oci-layout index.json manifest.json blobs
	mv "$out.tmp" "$out"
	rm -rf "$work"
}

build_images() {
	mkdir -p "$KUBE_IMAGES"
	local key root
	# Rebuild when the pause binary, busybox or this script changes.
	key=$(cat "$KUBE_BIN/.key" /bin/busybox "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
	if [[ -f $KUBE_IMAGES/.key && $(<"$KUBE_IMAGES/.key") == "$key" ]]; then
		return
	fi
	log "building images $PAUSE_IMAGE and $BUSYBOX_IMAGE"
	root=$(mktemp -d)
	install -m 0755 "$KUBE_BIN/pause" "$root/pause"
	make_image "$PAUSE_IMAGE" "$root" '{"Entrypoint":["/pause"]}' "$KUBE_IMAGES/pause.tar"
	rm -rf "$root"

	root=$(mktemp -d)
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev}
	chmod 1777 "$root/tmp"
	install -m 0755 /bin/busybox "$root/bin/busybox"
	local applet
	# One symlink per applet, at the path busybox itself reports (bin/sh...).
	while read -r applet; do
		[[ -e $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
	done < <(/bin/busybox --list-full)
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	make_image "$BUSYBOX_IMAGE" "$root" \
		'{"Cmd":["sh"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}' \
		"$KUBE_IMAGES/busybox.tar"
	rm -rf "$root"
	echo "$key" >"$KUBE_IMAGES/.key"
}

