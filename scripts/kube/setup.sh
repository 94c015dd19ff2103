# shellcheck shell=bash
# setup.sh: what kube-up.sh prepares on the host before the processes start:
# the recorded host state kube-down.sh restores, the forwarding rules, the PKI
# and kubeconfigs, and every configuration file. Sourced by kube-up.sh after
# lib.sh.

# ---------------------------------------------------------------------------
# Host state: recorded before anything changes it, restored by kube-down.sh
# ---------------------------------------------------------------------------

record_host_state() {
	local d=$HOST_STATE k v
	mkdir -p "$d"
	for k in "${TRACKED_SYSCTLS[@]}"; do
		# Keys that do not exist here (no IPv6, no conntrack yet) are skipped.
		if v=$(sysctl -n "$k" 2>/dev/null); then
			printf '%s=%s\n' "$k" "$v"
		fi
	done >"$d/sysctl.before"
	# Full snapshots, for kube-down.sh's report of anything else that changed.
	sysctl -a 2>/dev/null >"$d/sysctl-all.before" || true
	iptables-save >"$d/iptables.before" 2>/dev/null || true
	ip6tables-save >"$d/ip6tables.before" 2>/dev/null || true
	ipset list -n >"$d/ipset.before" 2>/dev/null || true
	ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 >"$d/links.before"
	# Host paths that the kubelet and libcni create whatever they are told
	# (device-plugin socket dir, container log symlinks, CNI result cache);
	# kube-down.sh removes those that did not exist before.
	local p
	for p in "${HOST_PATHS[@]}"; do
		if [[ -e $p ]]; then echo "$p"; fi
	done >"$d/paths.before"
}

# Docker sets the FORWARD policy to DROP, which would drop pod-to-pod
# (bridged traffic traverses FORWARD via br_netfilter) and pod-to-outside
# traffic. These ACCEPT rules are appended, i.e. evaluated after the chains
# that kube-proxy and kube-router insert at the top of FORWARD, so
# NetworkPolicy rejections still win. The comment lets kube-down find them.
allow_pod_forwarding() {
	local dir
	for dir in -s -d; do
		iptables -C FORWARD "$dir" "$POD_CIDR" -m comment --comment clawker-kube -j ACCEPT 2>/dev/null ||
			iptables -A FORWARD "$dir" "$POD_CIDR" -m comment --comment clawker-kube -j ACCEPT
	done
}

# ---------------------------------------------------------------------------
# PKI and kubeconfigs (regenerated on every start; EC P-256 keys are fast)
# ---------------------------------------------------------------------------

# sign NAME SUBJECT [EXTENSIONS] makes NAME.key/NAME.crt signed by the CA.
sign() {
	local name=$1 subj=$2 ext=${3:-}
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
	printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
		-days 365 -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}

# kubeconfig FILE CERT-NAME writes a self-contained kubeconfig (certs inlined).
kubeconfig() {
	local file=$1 cert=$KUBE_RUN/pki/$2
	cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: clawker-kube
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$KUBE_RUN/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$cert.crt")
    client-key-data: $(base64 -w0 "$cert.key")
contexts:
- name: clawker-kube
  context:
    cluster: clawker-kube
    user: $2
current-context: clawker-kube
EOF
	chmod 0600 "$file"
}

make_pki() {
	mkdir -p "$KUBE_RUN/pki" "$KUBE_RUN/kubeconfigs"
	(
		cd "$KUBE_RUN/pki"
		umask 077
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
		openssl req -x509 -new -key ca.key -subj "/CN=clawker-kube-ca" -days 3650 -sha256 \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
			-out ca.crt 2>/dev/null
		sign apiserver "/CN=kube-apiserver" \
			"extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$SERVICE_API_IP,IP:$NODE_IP"
		sign admin "/O=system:masters/CN=clawker-admin" "extendedKeyUsage=clientAuth"
		sign controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
		sign scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
		# The Node authorizer identifies kubelets by this exact name and group.
		sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
		sign kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
		# The apiserver's identity towards the kubelet (logs, exec, port-forward).
		sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
		# kube-router only reads pods, namespaces, policies and nodes; an admin
		# identity spares an RBAC manifest for a throwaway test cluster.
		sign kube-router "/O=system:masters/CN=clawker-kube-router" "extendedKeyUsage=clientAuth"
		# Service-account token signing key pair.
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key 2>/dev/null
		openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
	)
	kubeconfig "$KUBE_RUN/kubeconfig" admin
	local c
	for c in controller-manager scheduler kubelet kube-proxy kube-router; do
		kubeconfig "$KUBE_RUN/kubeconfigs/$c.kubeconfig" "$c"
	done
}

# ---------------------------------------------------------------------------
# Configuration files
# ---------------------------------------------------------------------------

write_configs() {
	local cfg=$KUBE_RUN/config
	mkdir -p "$cfg" "$CNI_CONF_DIR" "$CONTAINERD_STATE" "$CONTAINERD_ROOT" "$KUBELET_ROOT"

	# containerd 1.6 (Debian's). Own root, state and socket, so Docker's
	# containerd (/var/run/docker/containerd) is never involved.
	#  - restrict_oom_score_adj: CAP_SYS_RESOURCE is withheld even from root
	#    here, so runc cannot lower a container's oom_score_adj below ours;
	#    without it every sandbox fails ("can't get final child's PID from pipe").
	#  - SystemdCgroup=false: no systemd; cgroup v1 with the cgroupfs driver,
	#    matching the kubelet's cgroupDriver.
	#  - netns_mounts_under_state_dir: pod network namespaces are bind-mounted
	#    under our state dir instead of the shared /run/netns.
	cat >"$cfg/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_STATE/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUNC_ROOT"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_ROOT/opt"
EOF

	# CNI: one Linux bridge, host-local IPAM on the node's pod CIDR, masquerade
	# for traffic leaving the pod network, hairpin so a pod can reach itself
	# through a Service, portmap for hostPort. IPAM state under our run dir.
	cat >"$CNI_CONF_DIR/10-clawker-kube.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "clawker-kube",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_IPAM_DIR",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

	# kubelet. Non-default choices and why:
	#  - cgroupDriver cgroupfs: cgroup v1, no systemd.
	#  - failSwapOn false: do not refuse to start if the machine has swap.
	#  - protectKernelDefaults false: let the kubelet set vm.overcommit_memory,
	#    kernel.panic... (kube-down.sh restores them) instead of failing.
	#  - oomScoreAdj 0: lowering it to the default -999 needs CAP_SYS_RESOURCE.
	#  - image GC off (100%): imported images cannot be pulled again.
	#  - low eviction thresholds: CI disks can be nearly full.
	#  - volumePluginDir / podLogsDir: keep the kubelet out of /usr/libexec and
	#    /var/log/pods.
	#  - no clusterDNS: no CoreDNS; pods use the host's resolv.conf.
	cat >"$cfg/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $KUBE_RUN/pki/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failSwapOn: false
protectKernelDefaults: false
oomScoreAdj: 0
clusterDomain: $CLUSTER_DOMAIN
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
volumePluginDir: $SYS_LIB/kubelet-plugins
podLogsDir: $SYS_LIB/pod-logs
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
# The pod CIDR is a /24: room for the bench's 100 agent pods beside the
# rest (the default, 110, is not).
maxPods: 250
EOF

	# kube-proxy, iptables mode. Zero conntrack settings mean "leave the host's
	# values alone"; localhostNodePorts=false avoids setting route_localnet.
	cat >"$cfg/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $KUBE_RUN/kubeconfigs/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 1s
EOF
}

