#!/usr/bin/env bash
# kube-up.sh: stand up a real single-node Kubernetes cluster on this machine,
# offline, for the e2e tests that run agents as pods.
#
#   scripts/kube-up.sh                 # (as root) build (cached), start, wait until usable
#   source .cache/kube/run/env         # KUBECONFIG=... and friends
#   scripts/kube-load-image.sh IMG...  # copy images from Docker into the cluster
#   scripts/kube-down.sh               # stop everything, restore the host
#
#   scripts/kube-up.sh --build-only    # only build binaries and images (CI warm-up)
#
# What runs (all as background processes; pids and logs in .cache/kube/run):
#   etcd 3.6, a private containerd (Debian's, own socket/root/state; Docker's
#   containerd is never used), kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubelet, kube-proxy (iptables mode) and kube-router as
#   NetworkPolicy controller. Pod network: Debian's bridge + host-local CNI
#   plugins on $POD_CIDR. Images: a locally built pause image and busybox
#   (Debian's busybox-static); nothing is ever pulled.
#
# Prints the environment for tests (KUBECONFIG, CLAWKER_KUBE_GATEWAY,
# CLAWKER_KUBE_NODE_IP) as export lines, also kept in .cache/kube/run/env.
#
# Idempotent-ish: if the cluster of this checkout is already up and healthy it
# only prints those lines again; otherwise it first runs kube-down.sh to clear
# any half-started state, then starts from scratch (fresh etcd, fresh PKI).
# On failure it prints the tail of the relevant logs and exits non-zero; the
# pieces that did start are left for kube-down.sh to clean up.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=kube/lib.sh
source "$SCRIPTS_DIR/kube/lib.sh"

BUILD_ONLY=false
case "${1:-}" in
--build-only) BUILD_ONLY=true ;;
"") ;;
*) die "usage: $0 [--build-only]" ;;
esac

[[ $EUID -eq 0 ]] || die "must run as root (it starts a kubelet, containerd and changes iptables)"
START_TS=$SECONDS

# The build (packages, binaries, images) and the host setup (host state,
# PKI, kubeconfigs, configuration files) live beside lib.sh.
# shellcheck source=kube/build.sh
source "$SCRIPTS_DIR/kube/build.sh"
# shellcheck source=kube/setup.sh
source "$SCRIPTS_DIR/kube/setup.sh"

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# start NAME CMD... runs CMD in its own session (so it outlives this script
# and is not tied to the caller's terminal), with all output in its log and
# none of our descriptors: an inherited pipe (fd 3 is a copy of stderr) would
# keep a caller such as `kube-up.sh | tee` waiting for EOF forever, and an
# inherited fd 9 would hold the kube-up/kube-down lock for the process's life.
start() {
	local name=$1
	shift
	log "starting $name"
	setsid "$@" </dev/null >>"$KUBE_RUN/logs/$name.log" 2>&1 3>&- 9>&- &
	echo $! >"$KUBE_RUN/pids/$name.pid"
}

# wait_for NAME TIMEOUT_S CMD... polls CMD until it succeeds. Fails early if
# the component NAME (if it has a pid file) died.
wait_for() {
	local name=$1 timeout=$2 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if [[ -f $KUBE_RUN/pids/$name.pid ]] && ! pid_of "$name" >/dev/null; then
			FAILED_COMPONENT=$name
			die "$name exited (see $KUBE_RUN/logs/$name.log)"
		fi
		if ((SECONDS >= deadline)); then
			FAILED_COMPONENT=$name
			die "$name not ready after ${timeout}s: $*"
		fi
		sleep 0.5
	done
}

http_ok() { curl -fsS --max-time 3 "$@"; }
api_ok() {
	curl -fsS --max-time 3 --cacert "$KUBE_RUN/pki/ca.crt" \
		--cert "$KUBE_RUN/pki/admin.crt" --key "$KUBE_RUN/pki/admin.key" \
		"https://127.0.0.1:$API_PORT$1"
}

node_ready() {
	[[ $(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

default_sa_exists() { kctl -n default get serviceaccount default; }

smoke_pod_done() {
	local phase
	phase=$(kctl -n default get pod clawker-kube-smoke -o jsonpath='{.status.phase}' 2>/dev/null)
	[[ $phase == Failed ]] && die "smoke pod failed: $(kctl -n default describe pod clawker-kube-smoke | tail -n 20)"
	[[ $phase == Succeeded ]]
}

# cluster_healthy: every component of this checkout's cluster is alive and
# the API answers.
cluster_healthy() {
	local c
	for c in "${COMPONENTS[@]}"; do
		pid_of "$c" >/dev/null || return 1
	done
	api_ok /readyz >/dev/null 2>&1 && node_ready
}

FAILED_COMPONENT=
FAILED_COMMAND=
on_exit() {
	local rc=$?
	((rc == 0)) && return
	[[ -z $FAILED_COMMAND ]] || log "failed command: $FAILED_COMMAND"
	log "kube-up failed (exit $rc); last lines of the logs:"
	local f names=() lines=40
	case $FAILED_COMPONENT in
	"") names=("${COMPONENTS[@]}") lines=15 ;;
	# Pod and node problems usually show up in the runtime's log too.
	kubelet) names=(kubelet containerd) ;;
	*) names=("$FAILED_COMPONENT") ;;
	esac
	for f in "${names[@]}"; do
		[[ -s $KUBE_RUN/logs/$f.log ]] || continue
		printf '\n===== %s (%s) =====\n' "$f" "$KUBE_RUN/logs/$f.log" >&3
		tail -n "$lines" "$KUBE_RUN/logs/$f.log" >&3
	done
	log "what did start is still running: scripts/kube-down.sh cleans it up"
}

# check_ports fails early, with a clear message, if a port we listen on is
# taken (else the component dies and only its log tells why).
check_ports() {
	local p busy=""
	for p in "$API_PORT" "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" 10250 "$KUBELET_HEALTHZ_PORT" \
		10249 "$PROXY_HEALTHZ_PORT" 10257 10259 "$ROUTER_HEALTH_PORT"; do
		busy+=$(ss -Hltnp "sport = :$p" 2>/dev/null | awk '{print "\n  " $4 " " $6}')
	done
	[[ -z $busy ]] || die "TCP port(s) needed by the cluster are in use:$busy"
}

# node_ip is the address the apiserver advertises (the "kubernetes" Service
# endpoint, reached from pods) and the kubelet registers: the host's address
# on the default-route interface, else its first global IPv4 address that is
# not on a Docker or pod bridge.
node_ip() {
	local dev ip
	dev=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
	[[ -n $dev ]] && ip=$(ip -4 -o addr show dev "$dev" scope global | awk '{split($4, a, "/"); print a[1]; exit}')
	if [[ -z ${ip:-} ]]; then
		ip=$(ip -4 -o addr show scope global | awk '$2 !~ /^(docker|br-|veth|'"$CNI_BRIDGE"')/ {split($4, a, "/"); print a[1]; exit}')
	fi
	[[ -n $ip ]] || die "no global IPv4 address on this host to use as the node IP"
	echo "$ip"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

take_lock
mkdir -p "$KUBE_CACHE"
install_packages
build_binaries
build_images
if $BUILD_ONLY; then
	log "build done in $((SECONDS - START_TS))s"
	exit 0
fi

if cluster_healthy; then
	log "cluster already running"
	cat "$KUBE_RUN/env"
	exit 0
fi

# Whatever is left from an earlier run (crashed, half-started, or not torn
# down) goes first, so that every start is from a clean host.
"$SCRIPTS_DIR/kube-down.sh" --quiet
check_ports

set -E # the ERR trap also fires inside functions
trap 'FAILED_COMMAND="line $LINENO: $BASH_COMMAND"' ERR
trap on_exit EXIT
mkdir -p "$KUBE_RUN/pids" "$KUBE_RUN/logs" "$SYS_RUN" "$SYS_LIB"
# Lets kube-down.sh run from another checkout find this cluster's pids.
echo "$KUBE_RUN" >"$SYS_RUN/run-dir"
record_host_state
NODE_IP=$(node_ip)
log "node $NODE_NAME, IP $NODE_IP, pods $POD_CIDR, services $SERVICE_CIDR"
make_pki
write_configs
# br_netfilter makes bridged pod-to-pod traffic visible to iptables, which
# both kube-proxy (Service DNAT between pods on the bridge) and kube-router
# (NetworkPolicy) rely on. It is built in here; modprobe is for other kernels.
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
allow_pod_forwarding

# etcd: single member on loopback. No fsync: the cluster is disposable, and
# fsync on a shared CI disk makes every API write slow.
start etcd "$KUBE_BIN/etcd" --name clawker-kube --data-dir "$ETCD_DATA" \
	--listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster "clawker-kube=http://127.0.0.1:$ETCD_PEER_PORT" \
	--unsafe-no-fsync --log-level warn

start containerd containerd --config "$KUBE_RUN/config/containerd.toml"
wait_for containerd 60 kctr version
# Import the local images before the kubelet starts so that the very first
# sandbox finds the pause image.
for img in pause busybox; do
	kctr images import "$KUBE_IMAGES/$img.tar" >/dev/null
done
# Not piped into grep -q: with pipefail, grep's early exit can fail the
# listing with SIGPIPE when it is long (a store that kept earlier images).
images=$(kctr images check)
grep -q "$PAUSE_IMAGE" <<<"$images" || die "pause image import failed"

wait_for etcd 60 http_ok "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
PKI=$KUBE_RUN/pki
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
	--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
	--client-ca-file "$PKI/ca.crt" \
	--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
	--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types InternalIP \
	--service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
	--service-cluster-ip-range "$SERVICE_CIDR" \
	--authorization-mode Node,RBAC --allow-privileged=true \
	--profiling=false --v=1
wait_for kube-apiserver 120 api_ok /readyz

start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
	--kubeconfig "$KUBE_RUN/kubeconfigs/controller-manager.kubeconfig" \
	--authentication-kubeconfig "$KUBE_RUN/kubeconfigs/controller-manager.kubeconfig" \
	--authorization-kubeconfig "$KUBE_RUN/kubeconfigs/controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false \
	--use-service-account-credentials=true \
	--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
	--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
	--service-cluster-ip-range "$SERVICE_CIDR" \
	--flex-volume-plugin-dir "$SYS_LIB/flexvolume" \
	--profiling=false --v=1
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
	--kubeconfig "$KUBE_RUN/kubeconfigs/scheduler.kubeconfig" \
	--authentication-kubeconfig "$KUBE_RUN/kubeconfigs/scheduler.kubeconfig" \
	--authorization-kubeconfig "$KUBE_RUN/kubeconfigs/scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1

start kubelet "$KUBE_BIN/kubelet" --config "$KUBE_RUN/config/kubelet.yaml" \
	--kubeconfig "$KUBE_RUN/kubeconfigs/kubelet.kubeconfig" \
	--root-dir "$KUBELET_ROOT" --cert-dir "$KUBELET_ROOT/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
start kube-proxy "$KUBE_BIN/kube-proxy" --config "$KUBE_RUN/config/kube-proxy.yaml" --v=1

wait_for kube-controller-manager 60 http_ok -k https://127.0.0.1:10257/healthz
wait_for kube-scheduler 60 http_ok -k https://127.0.0.1:10259/healthz
wait_for kubelet 120 http_ok "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
wait_for kubelet 120 node_ready
wait_for kube-proxy 60 http_ok "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"

# kube-router needs the Node object (it looks itself up by name), so it
# starts last. Only its firewall (NetworkPolicy) controller runs.
start kube-router "$KUBE_BIN/kube-router" \
	--kubeconfig "$KUBE_RUN/kubeconfigs/kube-router.kubeconfig" \
	--hostname-override "$NODE_NAME" \
	--run-firewall=true --run-router=false --run-service-proxy=false \
	--enable-cni=false --enable-ipv4=true --enable-ipv6=false \
	--service-cluster-ip-range "$SERVICE_CIDR" \
	--health-port "$ROUTER_HEALTH_PORT" --metrics-port 0
wait_for kube-router 60 http_ok "http://127.0.0.1:$ROUTER_HEALTH_PORT/healthz"

# End-to-end smoke test: a pod from the local busybox image is scheduled,
# gets a sandbox and network, runs and succeeds.
wait_for kube-controller-manager 60 default_sa_exists
kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: clawker-kube-smoke
  namespace: default
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  automountServiceAccountToken: false
  containers:
  - name: smoke
    image: $BUSYBOX_IMAGE
    command: ["sh", "-c", "ip -4 addr show eth0 | grep -q inet && echo smoke-ok"]
EOF
wait_for kubelet 120 smoke_pod_done
[[ $(kctl -n default logs clawker-kube-smoke) == smoke-ok ]] || die "smoke pod printed: $(kctl -n default logs clawker-kube-smoke)"
kctl -n default delete pod clawker-kube-smoke --wait=false >/dev/null

# The environment for tests, also kept in a file to `source`:
#   KUBECONFIG            admin kubeconfig (certs inlined)
#   CLAWKER_KUBE_GATEWAY  the host's address on the pod network (the bridge),
#                         where pods reach a server running on the host
#   CLAWKER_KUBE_NODE_IP  the node's address (also reachable from pods)
#   CLAWKER_KUBE_IPAM_DIR host-local's state for the pod network (a test
#                         steers which IP the next pod gets through it)
cat >"$KUBE_RUN/env" <<EOF
export KUBECONFIG=$KUBE_RUN/kubeconfig
export CLAWKER_KUBE_GATEWAY=$POD_GATEWAY
export CLAWKER_KUBE_NODE_IP=$NODE_IP
export CLAWKER_KUBE_IPAM_DIR=$CNI_IPAM_DIR/clawker-kube
EOF
log "cluster ready in $((SECONDS - START_TS))s (environment also in $KUBE_RUN/env)"
cat "$KUBE_RUN/env"
