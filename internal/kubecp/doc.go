// Package kubecp is the control plane's own objects on a cluster: its
// service account and the one Role it needs, its keys, its registry's
// volume claim, a one-replica Deployment and the Service agents and the
// CLI reach it by.
package kubecp
