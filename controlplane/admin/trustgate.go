package admin

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/overseer"
)

// The exec gate: operator data (the command, its env, its stdin) goes
// only to an agent the CP has proven, that is a live Session that matched
// the agent's registry row with no findings. Containment is not gated: it
// acts on the engine, sends nothing into the agent, and exists for exactly
// the agents this gate refuses.

// untrustedError is the one FailedPrecondition answer of the gate. The
// ErrorInfo detail lets the CLI tell it from other failed preconditions
// (no Session yet) and pick its documented exit code.
func untrustedError(ag *adminv1.Agent, why string) error {
	name := ag.GetAgent()
	if ag.GetProject() != "" {
		name = ag.GetProject() + "/" + name
	}
	msg := fmt.Sprintf("agent %s is not trusted (%s): nothing was sent to it", name, why)
	if strings.Contains(why, string(overseer.ReasonRegisterAssertionSpent)) {
		// Nothing the CP can redo: the one-time assertion is gone.
		msg += "; its one-time registration assertion is spent: recreate the agent (clawker rm, then clawker run)"
	}
	st := status.New(codes.FailedPrecondition, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: adminv1.ErrorReasonUntrusted, Domain: adminv1.ErrorDomain,
		Metadata: map[string]string{"trusted": "no (" + why + ")", "container_id": ag.GetContainerId()},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// gateExec decides whether start may be delivered to ag. It logs every
// refusal (event=admin_exec_refused) with the caller; an admitted untrusted
// exec is logged by the caller's admin_exec line (allow_untrusted=true).
func (s *Server) gateExec(ctx context.Context, ag *adminv1.Agent, start *adminv1.ExecStart) (trust string, err error) {
	trust = adminv1.TrustSummary(ag)
	why := adminv1.UntrustedBecause(ag)
	if why == "" || start.GetAllowUntrusted() {
		return trust, nil
	}
	s.log.Warn().Str("event", "admin_exec_refused").Str("container_id", ag.GetContainerId()).
		Str("agent", ag.GetAgent()).Str("project", ag.GetProject()).Str("trusted", trust).
		Strs("argv", start.GetArgv()).Str("by", callerCN(ctx)).Msg("exec refused: agent not trusted")
	return trust, untrustedError(ag, why)
}
