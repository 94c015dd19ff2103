package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
)

// maxProfileBytes caps what the CLI buffers: real CP profiles are well
// under a few MiB; more means something is wrong, not a bigger file.
const maxProfileBytes = 256 << 20

var profileKinds = map[string]adminv1.ProfileKind{
	"cpu":       adminv1.ProfileKind_PROFILE_KIND_CPU,
	"heap":      adminv1.ProfileKind_PROFILE_KIND_HEAP,
	"goroutine": adminv1.ProfileKind_PROFILE_KIND_GOROUTINE,
	"allocs":    adminv1.ProfileKind_PROFILE_KIND_ALLOCS,
	"mutex":     adminv1.ProfileKind_PROFILE_KIND_MUTEX,
	"block":     adminv1.ProfileKind_PROFILE_KIND_BLOCK,
}

func (a *app) cpProfileCmd() *cobra.Command {
	var kind, out string
	var seconds int
	cmd := &cobra.Command{
		Use:   "profile",
		Short: "Write a pprof profile of the control plane to a file",
		Long: `profile records a Go runtime profile of the running control plane over
its admin API (mTLS, the CLI cert only: agents cannot ask for one) and writes
it to a file readable by go tool pprof, mode 0600.

cpu, mutex and block profiles sample for --seconds (1 to 120, default 10;
one such profile runs at a time); heap, goroutine and allocs are taken at
once. mutex and block profiles are cumulative over every window since the
control plane started.`,
		Example: `  clawker cp profile --kind cpu --seconds 10 -o cp.pprof && go tool pprof -top cp.pprof
  clawker cp profile --kind heap -o heap.pprof`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, ok := profileKinds[kind]
			if !ok {
				return usageErrorf("--kind must be cpu, heap, goroutine, allocs, mutex or block, not %q", kind)
			}
			if out == "" {
				return usageErrorf("name the output file with -o")
			}
			windowed := kind == "cpu" || kind == "mutex" || kind == "block"
			switch {
			case windowed && (seconds < 1 || seconds > 120):
				return usageErrorf("--seconds must be 1 to 120, not %d", seconds)
			case !windowed && cmd.Flags().Changed("seconds"):
				return usageErrorf("--seconds applies to cpu, mutex and block profiles only (%s is taken at once)", kind)
			case !windowed:
				seconds = 0
			}
			return a.cpProfile(cmd.Context(), kind, &adminv1.ProfileRequest{Kind: k, Seconds: uint32(seconds)}, out)
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "cpu", "profile kind: cpu, heap, goroutine, allocs, mutex or block")
	cmd.Flags().IntVar(&seconds, "seconds", 10, "how long cpu, mutex and block profiles sample (1 to 120)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (replaced atomically, mode 0600)")
	return cmd
}

func (a *app) cpProfile(ctx context.Context, kind string, req *adminv1.ProfileRequest, out string) error {
	ac, err := a.admin(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	// The window plus the usual RPC allowance; Ctrl-C cancels the stream
	// and the CP abandons the profile.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(req.GetSeconds())*time.Second+15*time.Second)
	defer cancel()
	stream, err := ac.Profile(ctx, req)
	if err != nil {
		return rpcError("profile", err)
	}
	var data []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return profileError(err)
		}
		if len(data)+len(chunk.GetData()) > maxProfileBytes {
			return fmt.Errorf("profile: larger than %d MiB, not written", maxProfileBytes>>20)
		}
		data = append(data, chunk.GetData()...)
	}
	if len(data) == 0 {
		return errors.New("profile: the control plane sent an empty profile")
	}
	path, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if err := auth.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	fmt.Fprintf(a.errOut, "wrote %s profile (%d bytes) to %s\n", kind, len(data), out)
	return nil
}

// profileError adds the one profile-specific hint (busy) to rpcError.
func profileError(err error) error {
	if status.Code(err) == codes.ResourceExhausted {
		return withCode(ExitUnavailable, errors.New("profile: the control plane is already recording a cpu, mutex or block profile: try again when it ends"))
	}
	return rpcError("profile", err)
}
