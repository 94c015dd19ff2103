// Package kubeagent makes an agent pod: the pod spec that runs clawkerd
// as the agent container's PID 1 from any unmodified image, and the
// per-pod bootstrap Secret whose leaf cert binds the pod's UID.
package kubeagent
