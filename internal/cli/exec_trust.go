package cli

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// ExitUntrusted is clawker exec's code when the control plane refused to
// send the command to an agent it has not proven. 126 is what docker exec
// and docker run use for "the command cannot be invoked": nothing ran, and
// a script that already branches on docker's 126 treats this the same way.
// (125, docker's "the daemon failed", maps to clawker's 1 and 3.)
const ExitUntrusted = 126

// untrustedWarning is printed before an exec with --allow-untrusted.
const untrustedWarning = "clawker: warning: --allow-untrusted: the command, its -e values and its stdin may go to an agent " +
	"the control plane has not proven; this exec is written to the control plane's audit log\n"

// untrustedRefusal turns the control plane's AGENT_UNTRUSTED answer into
// the message and exit code of a refused exec; ok=false for any other
// error.
func untrustedRefusal(err error, allowed bool) (error, bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.FailedPrecondition {
		return nil, false
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok && i.GetReason() == adminv1.ErrorReasonUntrusted {
			info = i
		}
	}
	if info == nil {
		return nil, false
	}
	next := "to run it anyway for forensics, add --allow-untrusted (audited)"
	if allowed {
		// Only the Dialer's pin refuses an allowed exec: whoever answers
		// at that address did not prove to be the container.
		next = "its Session failed the control plane's cert pin and is kept for observation only, " +
			"even with --allow-untrusted; contain it (clawker contain) or inspect it with docker"
	}
	return withCode(ExitUntrusted, fmt.Errorf(
		"exec refused: %s. The TRUSTED column of `clawker agents` shows %q for it; %s",
		st.Message(), info.GetMetadata()["trusted"], next)), true
}
