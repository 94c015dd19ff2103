// Package admin serves AdminService: the CLI's window into the control
// plane (ListAgents, WatchEvents, Exec, Contain, Health). It reads the
// registry and the overseer's worldview, acts on agents through the
// Session Dialer and the Docker engine, and publishes what it did.
//
// It owns neither listener nor TLS material (the daemon wires those) and
// never writes the registry: the Register handler is its sole writer.
// Callers are pinned to the CLI cert (CN clawker-cli) by ServerTLSConfig
// and again per RPC by the interceptors in authz.go.
package admin
