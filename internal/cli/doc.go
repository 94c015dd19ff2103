// Package cli holds the cobra command tree of the clawker CLI: init, the
// control plane's lifecycle (cp up/down/status/logs), the agent create flow
// (run), and the AdminService clients (agents, events, exec, contain).
//
// It owns the CLI home's use (CA, signing key) and the Docker objects the
// CLI creates; it never opens the CP's registry: everything it knows about
// agents comes from the CP over AdminService.
package cli
