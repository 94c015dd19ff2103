#!/usr/bin/env bash
# kube-down.sh: tear down the cluster started by kube-up.sh and put the host
# back as it was: stop every component, remove every pod (containers, network
# namespaces, veths, IPs), unmount pod volumes, delete the CNI bridge, the
# iptables chains/rules and ipsets that the kubelet, kube-proxy, kube-router
# and the CNI plugins added, restore the sysctls recorded at start, and remove
# the run state. Docker's containerd, networks and iptables rules are left
# alone.
#
#   scripts/kube-down.sh [--quiet]
#
# Safe to run at any time, also when nothing is running (kube-up.sh runs it
# first) and after a failed or interrupted kube-up.sh. Logs of the last run
# are kept in .cache/kube/last-run-logs.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=kube/lib.sh
source "$SCRIPTS_DIR/kube/lib.sh"

QUIET=false
[[ ${1:-} == --quiet ]] && QUIET=true
say() { $QUIET || log "$@"; }
# Warnings are printed even with --quiet.
warn() { log "warning: $*"; }

[[ $EUID -eq 0 ]] || die "must run as root"
take_lock

# kube-up.sh records its run dir here, so that a cluster started from another
# checkout (or with another CLAWKER_KUBE_CACHE) is still found and stopped.
if [[ -f $SYS_RUN/run-dir ]]; then
	KUBE_RUN=$(<"$SYS_RUN/run-dir")
	KUBE_CACHE=${KUBE_RUN%/run}
	KUBE_BIN=$KUBE_CACHE/bin
	KUBE_LAST_LOGS=$KUBE_CACHE/last-run-logs
fi

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# our_pid NAME prints the pid of component NAME if it is alive AND is ours:
# its command line names our cache or run dir (guards against pid reuse).
our_pid() {
	local pid
	pid=$(pid_of "$1") || return 1
	local cmdline
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	grep -qF -e "$KUBE_CACHE" -e "$KUBE_RUN" <<<"$cmdline" || return 1
	echo "$pid"
}

# stop NAME...: SIGTERM to all at once, up to 15 s grace, then SIGKILL.
stop() {
	local name pid pids=() i
	for name in "$@"; do
		if pid=$(our_pid "$name"); then
			say "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$KUBE_RUN/pids/$name.pid"
	done
	local alive
	for ((i = 0; i < 150; i++)); do
		alive=false
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive=true
		done
		$alive || return 0
		sleep 0.1
	done
	for pid in "${pids[@]}"; do
		kill -KILL "$pid" 2>/dev/null && say "killed pid $pid (no exit after SIGTERM)"
	done
	return 0
}

# Pods: with the kubelet stopped (so it cannot recreate them), ask
# containerd to stop and remove every sandbox. That kills the containers and
# runs the CNI DEL for each (IP release, veth, bridge-plugin NAT rules).
remove_pods() {
	[[ -S $CONTAINERD_SOCK ]] && our_pid containerd >/dev/null && [[ -x $KUBE_BIN/kube ]] || return 0
	say "removing pod sandboxes"
	if ! "$KUBE_BIN/kube" cri-reset --endpoint "unix://$CONTAINERD_SOCK" --timeout 90s 2>&1 | { $QUIET && cat >/dev/null || cat >&3; }; then
		say "some sandboxes could not be removed cleanly; killing what is left"
	fi
}

# shims_of_ours prints pids of containerd shims started by our containerd
# (their command line carries our socket path); Docker's have another.
shims_of_ours() {
	local p cmdline
	for p in /proc/[0-9]*; do
		cmdline=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		[[ $cmdline =~ containerd-shim.*-address\ $CONTAINERD_SOCK ]] && echo "${p#/proc/}"
	done
	return 0
}

# remove_shim_sockets: a shim that did not exit cleanly leaves its socket
# in /run/containerd/s, the directory Docker's shims use too. containerd
# 1.6 names it sha256("<containerd address>/<namespace>/<task id>"), so ours
# are exactly those computed from the task dirs under our state dir.
remove_shim_sockets() {
	local dir ns id sock
	for dir in "$CONTAINERD_STATE"/io.containerd.runtime.v2.task/*/*/; do
		[[ -d $dir ]] || continue
		id=$(basename "$dir") ns=$(basename "$(dirname "$dir")")
		sock=/run/containerd/s/$(printf '%s' "$CONTAINERD_SOCK/$ns/$id" | sha256sum | cut -d' ' -f1)
		[[ -S $sock ]] && rm -f "$sock"
	done
	return 0
}

# Processes still inside the kubelet's cgroups are pod containers whose
# shim is gone; they are ours by construction.
kill_pod_processes() {
	local f pid
	while read -r f; do
		while read -r pid; do
			kill -KILL "$pid" 2>/dev/null || true
		done <"$f"
	done < <(find /sys/fs/cgroup/*/kubepods -name cgroup.procs 2>/dev/null)
}

remove_cgroups() {
	local d
	for d in /sys/fs/cgroup/*/kubepods; do
		[[ -d $d ]] || continue
		# Only empty cgroups can be removed; rmdir (not rm) is the only way.
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[[ -d $d ]] && warn "cgroup $d is not empty; left in place"
	done
	return 0
}

# ---------------------------------------------------------------------------
# Mounts, links
# ---------------------------------------------------------------------------

unmount_all() {
	local mp i mps
	for ((i = 0; i < 3; i++)); do
		# Mount points are field 5 of mountinfo, with spaces as \040. Reverse
		# order puts children before their parents.
		mapfile -t mps < <(awk '{print $5}' /proc/self/mountinfo |
			while read -r mp; do printf '%b\n' "$mp"; done |
			grep -E "^($SYS_RUN|$SYS_LIB)(/|$)" | LC_ALL=C sort -r)
		((${#mps[@]})) || return 0
		for mp in "${mps[@]}"; do
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
		done
	done
	warn "mounts left under $SYS_RUN or $SYS_LIB"
}

remove_links() {
	local l
	if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
		# veths still attached to the bridge (their netns outlived the pods).
		for l in $(ip -o link show master "$CNI_BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
			ip link del "$l" 2>/dev/null || true
		done
		ip link del "$CNI_BRIDGE" 2>/dev/null || true
		say "deleted bridge $CNI_BRIDGE"
	fi
}

# remove_host_paths deletes what the components left outside our own dirs
# (see HOST_PATHS in lib.sh): whole paths that kube-up found absent, and
# otherwise only the entries that are ours.
remove_host_paths() {
	local before=$HOST_STATE/paths.before p l
	for p in "${HOST_PATHS[@]}"; do
		[[ -e $p ]] || continue
		if [[ -f $before ]] && ! grep -qxF "$p" "$before"; then
			rm -rf --one-file-system "$p"
			continue
		fi
		case $p in
		/var/log/containers)
			for l in "$p"/*; do
				[[ -L $l && $(readlink "$l") == "$SYS_LIB"/* ]] && rm -f "$l"
			done
			;;
		/var/lib/cni) rm -f "$p"/results/clawker-kube-* ;;
		esac
	done
	return 0
}

# ---------------------------------------------------------------------------
# iptables, ipset, conntrack
# ---------------------------------------------------------------------------

# clean_iptables IPT removes, in every table, (1) the rules in other chains
# (FORWARD, POSTROUTING...) that jump to a KUBE-* / CNI-* chain or carry our
# clawker-kube comment, then (2) the KUBE-* and CNI-* chains themselves.
# KUBE-* chains come from the kubelet, kube-proxy and kube-router, CNI-* from
# the bridge and portmap plugins. Docker's chains and rules are untouched;
# restoring a snapshot instead would also undo what Docker did meanwhile.
clean_iptables() {
	local ipt=$1 t line c chains
	for t in raw mangle nat filter; do
		# (2>/dev/null: iptables-nft warns on every call that legacy tables exist.)
		"$ipt" -t "$t" -S >/dev/null 2>&1 || continue
		while read -r line; do
			# -S prints rules in shell-quoted form; replay as a delete.
			eval "$ipt -t $t ${line/#-A/-D}" 2>/dev/null || true
		done < <("$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A ' | grep -vE '^-A (KUBE-|CNI-)' |
			grep -E -e '-[jg] (KUBE-|CNI-)' -e 'clawker-kube')
		mapfile -t chains < <("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}')
		for c in "${chains[@]}"; do "$ipt" -t "$t" -F "$c" 2>/dev/null || true; done
		for c in "${chains[@]}"; do "$ipt" -t "$t" -X "$c" 2>/dev/null || true; done
	done
}

# drop_new_tables: iptables-nft creates an nftables table the first time
# anything is written to it (the kubelet and kube-proxy create mangle, and
# the IPv6 tables), and removing our rules leaves it behind, empty. Such a
# table is deleted when it did not exist before kube-up and holds no rule,
# no user chain and no non-ACCEPT policy. Needs `nft` (Debian's nftables).
drop_new_tables() {
	command -v nft >/dev/null || return 0
	[[ $(iptables -V 2>/dev/null) == *nf_tables* ]] || return 0
	local fam save before t out
	for fam in ip ip6; do
		save=iptables-save before=$HOST_STATE/iptables.before
		[[ $fam == ip6 ]] && save=ip6tables-save before=$HOST_STATE/ip6tables.before
		[[ -f $before ]] || continue
		for t in raw mangle nat filter security; do
			grep -qx "\*$t" "$before" && continue
			out=$("$save" -t "$t" 2>/dev/null) || continue
			grep -qx "\*$t" <<<"$out" || continue
			grep -qE '^-A |^:[^ ]+ (-|DROP|REJECT) ' <<<"$out" && continue
			nft delete table "$fam" "$t" 2>/dev/null && say "deleted empty $fam table $t (created while the cluster ran)"
		done
	done
	return 0
}

# kube-router's ipsets: every set that did not exist before kube-up.
clean_ipsets() {
	command -v ipset >/dev/null || return 0
	local before=$HOST_STATE/ipset.before s
	for s in $(ipset list -n 2>/dev/null); do
		if [[ -f $before ]]; then
			grep -qxF "$s" "$before" && continue
		else
			[[ $s == KUBE-* || $s == kube-router* ]] || continue
		fi
		ipset destroy "$s" 2>/dev/null || warn "could not destroy ipset $s"
	done
}

clean_conntrack() {
	command -v conntrack >/dev/null || return 0
	local cidr
	for cidr in "$POD_CIDR" "$SERVICE_CIDR"; do
		conntrack -D -s "$cidr" >/dev/null 2>&1 || true
		conntrack -D -d "$cidr" >/dev/null 2>&1 || true
	done
}

# ---------------------------------------------------------------------------
# sysctls
# ---------------------------------------------------------------------------

restore_sysctls() {
	local f=$HOST_STATE/sysctl.before line k v cur
	[[ -f $f ]] || return 0
	while IFS= read -r line; do
		k=${line%%=*} v=${line#*=}
		cur=$(sysctl -n "$k" 2>/dev/null) || continue
		if [[ $cur != "$v" ]]; then
			if sysctl -qw "$k=$v" 2>/dev/null; then
				say "restored sysctl $k=$v (was $cur)"
			else
				warn "could not restore sysctl $k=$v (is $cur)"
			fi
		fi
	done <"$f"
}

# report_drift compares the host with the snapshots taken by kube-up.sh and
# reports (does not change) any remaining difference outside what is known
# to change by itself or through Docker.
report_drift() {
	local d=$HOST_STATE
	[[ -d $d ]] && ! $QUIET || return 0
	local noise='^(kernel\.random\.|kernel\.ns_last_pid|kernel\.pty\.nr|fs\.|net\.netfilter\.nf_conntrack_count|net\.ipv[46]\.(conf|neigh)\.(veth|br-|docker|'"$CNI_BRIDGE"')|kernel\.sched_domain|vm\.nr_|kernel\.tainted|dev\.)'
	if [[ -f $d/sysctl-all.before ]]; then
		local drift
		drift=$(diff <(grep -vE "$noise" "$d/sysctl-all.before") <(sysctl -a 2>/dev/null | grep -vE "$noise") | grep '^[<>]' || true)
		[[ -z $drift ]] || say "note: sysctls differing from before kube-up (not ours to restore):"$'\n'"$drift"
	fi
	local norm='s/\[[0-9]+:[0-9]+\]//; /^#/d'
	if [[ -f $d/iptables.before ]]; then
		local ipt_drift
		ipt_drift=$(diff <(sed -E "$norm" "$d/iptables.before") <(iptables-save 2>/dev/null | sed -E "$norm") | grep '^[<>]' || true)
		[[ -z $ipt_drift ]] || say "note: iptables differs from before kube-up (Docker may have changed it):"$'\n'"$ipt_drift"
	fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

T0=$SECONDS
# The kubelet goes first so that it cannot restart pods while they are
# removed; containerd goes after the pods, with etcd.
stop kubelet
stop kube-router kube-proxy kube-scheduler kube-controller-manager kube-apiserver
remove_pods
stop containerd etcd
# Normally no shim is left: each exits once its sandbox is removed.
for pid in $(shims_of_ours); do
	kill -KILL "$pid" 2>/dev/null || true
done
remove_shim_sockets
kill_pod_processes
unmount_all
remove_links
remove_host_paths
clean_iptables iptables
command -v ip6tables >/dev/null && clean_iptables ip6tables
drop_new_tables
clean_ipsets
clean_conntrack
restore_sysctls
remove_cgroups
report_drift

# Run state. --one-file-system: never follow into a mount that survived.
rm -rf --one-file-system "$SYS_RUN" "$SYS_LIB"
if [[ -d $KUBE_RUN ]]; then
	if [[ -d $KUBE_RUN/logs ]]; then
		rm -rf "$KUBE_LAST_LOGS"
		mv "$KUBE_RUN/logs" "$KUBE_LAST_LOGS"
	fi
	rm -rf "$KUBE_RUN"
fi
say "cluster down in $((SECONDS - T0))s (logs of the last run: $KUBE_LAST_LOGS)"
