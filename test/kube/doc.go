// Package kube is the e2e suite of agents as pods on a real single-node
// Kubernetes cluster (scripts/kube-up.sh): Register, init and exec through
// a clawker-cp on the kubernetes runtime, the identity gate, agent
// isolation and a CP restart.
package kube
