// Package kubepods is the control plane's view of agents that run as
// Kubernetes pods: the peer lookup (pod IP → pod → labels), the lifecycle
// feed (pod transitions as the bus's container events), the dial target
// and the agent inventory, all answered from one pod informer.
//
// A pod stands where the Docker runtime has a container: its workload ID
// (auth.PodWorkloadID of the pod UID) is the "container ID" every contract
// keys on, so the identity gate, the registry and the Session need no
// second vocabulary. docs/spec-notes.md records the mapping.
package kubepods
