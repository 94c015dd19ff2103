package adminv1

import "strings"

// Trust vocabulary shared by the control plane's exec gate and the CLI's
// TRUSTED column, so the refusal and the column always say the same thing.
// (Hand-written; not generated.)
const (
	// ErrorDomain is the google.rpc.ErrorInfo domain of clawker's errors.
	ErrorDomain = "clawker.dev"
	// ErrorReasonUntrusted marks a FailedPrecondition that refused to send
	// operator data (command, env, stdin) to an agent that is not trusted.
	// Its metadata carries "trusted" (the TrustSummary) and "container_id".
	ErrorReasonUntrusted = "AGENT_UNTRUSTED"
)

// TrustSummary is what `clawker agents` shows in TRUSTED: "yes" only for a
// live Session that matched the agent's registry row with no findings,
// otherwise "no (<reason>)". It fails closed: anything not positively
// established reads "no".
func TrustSummary(a *Agent) string {
	if r := UntrustedBecause(a); r != "" {
		return "no (" + r + ")"
	}
	return "yes"
}

// UntrustedBecause is the reason a is not trusted, or "" when it is.
// Findings come first (they are evidence); then what is missing.
func UntrustedBecause(a *Agent) string {
	switch {
	case a == nil:
		return "unknown agent"
	case len(a.GetUntrustedReasons()) > 0:
		return strings.Join(a.GetUntrustedReasons(), ",")
	case !a.GetLive() || a.GetSessionState() == "" || a.GetSessionState() == "none":
		return "no session"
	case a.GetSessionState() != "connected":
		return "session " + a.GetSessionState()
	case !a.GetRegistered():
		return "unregistered"
	case a.GetThumbprint() != "" && a.GetPeerThumbprint() != "" && a.GetThumbprint() != a.GetPeerThumbprint():
		// The dialer reports this as a finding; this keeps the gate closed
		// should that event be lost.
		return "thumbprint_mismatch"
	case !a.GetTrusted():
		return "unverified"
	}
	return ""
}
