// Package dockerevents feeds Docker container events into the overseer bus
// as typed DockerEvent values. It owns the reconnect loop over the Events
// API (backoff, resume from the last event time) and the reconcile that
// synthesizes start/die/destroy for changes missed while disconnected. It
// holds no policy: subscribers (agent.Start) decide what an event means,
// and it must not dial agents or touch the registry.
package dockerevents
