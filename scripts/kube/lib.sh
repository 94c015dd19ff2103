# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings are used by the scripts sourcing this
# Shared settings and helpers for scripts/kube-up.sh, kube-down.sh and
# kube-load-image.sh. Sourced, never run.
#
# Layout
#   $KUBE_CACHE/bin     built binaries, reused while $KUBE_CACHE/bin/.key matches
#   $KUBE_CACHE/images  locally built pause and busybox image archives
#   $KUBE_RUN           pids, logs, PKI, kubeconfigs, configs
#   $SYS_RUN, $SYS_LIB  runtime state of containerd, kubelet, etcd and CNI: kept
#                       outside the work tree because unix socket paths must be
#                       short and mounts should not land inside a git checkout.
#   $HOST_STATE         the host as it was before kube-up (sysctls, iptables,
#                       ipsets, paths): per machine, not per checkout, so that
#                       a kube-down from a fresh clone (CI) still restores it.
# Everything under these paths belongs to this cluster alone; Docker's own
# containerd (/run/containerd, /var/lib/containerd, /var/run/docker) is never
# touched.

KUBE_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KUBE_CACHE=${CLAWKER_KUBE_CACHE:-$KUBE_REPO_ROOT/.cache/kube}
KUBE_BIN=$KUBE_CACHE/bin
KUBE_IMAGES=$KUBE_CACHE/images
KUBE_RUN=$KUBE_CACHE/run
KUBE_LAST_LOGS=$KUBE_CACHE/last-run-logs
SYS_RUN=/run/clawker-kube
SYS_LIB=/var/lib/clawker-kube
HOST_STATE=$SYS_RUN/host-state

# Versions (see scripts/kube/go.mod, etcd/go.mod, kube-router/go.mod).
# Kubernetes 1.35 dropped cgroup v1 and containerd 1.x; this machine has both.
KUBE_VERSION=v1.34.4

# Network layout. Docker uses 172.17.0.0/16 (and 172.18+ / 192.168.x for
# user networks); the host resolver is 10.255.255.53. These do not overlap.
POD_CIDR=10.244.0.0/24        # host-local IPAM on the single node
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
SERVICE_API_IP=10.96.0.1      # first IP of SERVICE_CIDR: the "kubernetes" Service
CNI_BRIDGE=clawkerkube0       # <= 15 chars; not docker0 / cni0 / kube-bridge
NODE_NAME=clawker-kube
CLUSTER_DOMAIN=cluster.local

# Ports. Non-default etcd ports so a project's own etcd test can keep 2379.
API_PORT=${CLAWKER_KUBE_API_PORT:-6443}
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10256
ROUTER_HEALTH_PORT=20244

CONTAINERD_SOCK=$SYS_RUN/containerd/containerd.sock
CONTAINERD_ROOT=$SYS_LIB/containerd
CONTAINERD_STATE=$SYS_RUN/containerd
RUNC_ROOT=$SYS_RUN/runc
CNI_CONF_DIR=$SYS_RUN/cni/net.d
CNI_IPAM_DIR=$SYS_RUN/cni/ipam
CNI_BIN_DIR=/usr/lib/cni      # Debian's containernetworking-plugins
KUBELET_ROOT=$SYS_LIB/kubelet
ETCD_DATA=$SYS_LIB/etcd

# Images built locally (nothing can be pulled). Tags are not "latest" so the
# default imagePullPolicy is IfNotPresent.
PAUSE_IMAGE=localhost/clawker/pause:1
BUSYBOX_IMAGE=localhost/clawker/busybox:1.35.0

# Components started by kube-up.sh, in start order; kube-down stops them in
# reverse order.
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router)

# Sysctls that the kubelet, kube-proxy or kube-router may change. kube-up.sh
# records them and kube-down.sh writes back whatever differs.
TRACKED_SYSCTLS=(
	vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes
	net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.all.route_localnet
	net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter
	net.ipv6.conf.all.forwarding
	net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
	net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
	net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_tcp_be_liberal
	net.netfilter.nf_conntrack_udp_timeout net.netfilter.nf_conntrack_udp_timeout_stream
)

# Paths outside $SYS_RUN/$SYS_LIB that the components write to no matter how
# they are configured: the kubelet's device-plugin socket
# (/var/lib/kubelet/device-plugins is hard-coded), its container log symlinks
# (/var/log/containers, hard-coded) and libcni's result cache (/var/lib/cni,
# which containerd 1.6 does not let us move).
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/lib/cni /usr/libexec/kubernetes)

export PATH=$KUBE_BIN:$PATH:/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin

# Messages go to fd 3, a copy of the original stderr, so that they are seen
# even from functions whose output a caller discards.
exec 3>&2
log() { printf '[kube %s] %s\n' "$(date +%T)" "$*" >&3; }
die() { log "ERROR: $*"; exit 1; }

# take_lock serializes kube-up and kube-down (two test packages starting the
# cluster at once would otherwise tear down each other's). kube-up runs
# kube-down while holding it, hence the variable passed down.
take_lock() {
	[[ -n ${CLAWKER_KUBE_LOCKED:-} ]] && return 0
	local f=/run/lock/clawker-kube.lock
	[[ -d /run/lock ]] || f=/run/clawker-kube.lock
	exec 9>"$f"
	flock -w 900 9 || die "another kube-up/kube-down is still running (lock $f)"
	export CLAWKER_KUBE_LOCKED=1
}

# pid_of NAME prints the recorded pid of a component if that process is alive.
pid_of() {
	local f=$KUBE_RUN/pids/$1.pid pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

# kctl runs kubectl as cluster admin.
# Its discovery cache stays in the run dir rather than in ~/.kube.
kctl() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBE_RUN/kubeconfig" --cache-dir "$KUBE_RUN/kubectl-cache" "$@"; }

# kctr runs containerd's ctr against this cluster's containerd, in the
# namespace the CRI plugin (and so the kubelet) uses.
kctr() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
