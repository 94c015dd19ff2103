// Package egress runs the egress gateway (internal/egress/gateway) as a
// CP component: the agents' DNS resolver and HTTP(S) proxy, listening on
// every CP address (agents reach only the CP's .2 on their internal
// networks), attributing each connection through the CP's peer lookup
// and trust view, holding each project's policy (pushed by clawker run
// and clawker egress reload, persisted in the data dir), timed grants,
// per-agent egress blocks, and publishing every decision on the bus.
package egress
