package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/egress/egressca"
)

// EnsureEgressCA creates the install's TLS interception CA in the home
// when missing. The CP holds its key; agents only ever get the cert.
func EnsureEgressCA(h auth.Home) error {
	if _, err := os.Stat(h.Path(consts.EgressCAKeyFile)); err == nil {
		if _, err := os.Stat(h.Path(consts.EgressCAFile)); err == nil {
			return nil
		}
	}
	ca, err := egressca.NewCA()
	if err != nil {
		return fmt.Errorf("create egress CA: %w", err)
	}
	certPEM, keyPEM, err := ca.PEM()
	if err != nil {
		return err
	}
	if err := auth.WriteFileAtomic(h.Path(consts.EgressCAKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return auth.WriteFileAtomic(h.Path(consts.EgressCAFile), certPEM, 0o644)
}

// egressCAFiles are the interception CA's files for the agent's bundle:
// the CA at EgressCAPath, and each system bundle the image has (read from
// the created container) with the CA appended, so OpenSSL, Go and Python
// trust it too.
func egressCAFiles(ctx context.Context, c containerFileReader, id string, h auth.Home) ([]bundleFile, error) {
	if err := EnsureEgressCA(h); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(h.Path(consts.EgressCAFile))
	if err != nil {
		return nil, fmt.Errorf("read egress CA: %w", err)
	}
	files := []bundleFile{{path: consts.EgressCAPath, mode: 0o444, data: certPEM}}
	for _, b := range egressca.SystemBundles {
		data, err := readContainerFile(ctx, c, id, b)
		if err != nil {
			return nil, err
		}
		if data == nil {
			continue
		}
		if data, ok := egressca.Append(data, certPEM); ok {
			files = append(files, bundleFile{path: b, mode: 0o644, data: data})
		}
	}
	return files, nil
}

// containerFileReader reads a file out of a container.
type containerFileReader interface {
	CopyFromContainer(ctx context.Context, container string, options mobyclient.CopyFromContainerOptions) (mobyclient.CopyFromContainerResult, error)
}

// maxImageFile bounds a file clawker run reads out of the agent image (a
// CA bundle, ssh_config) to extend it.
const maxImageFile = 16 << 20

// readContainerFile returns a regular file of a (created) container; nil
// when it is missing or not a regular file (a symlink is skipped: its
// target is in egressca.SystemBundles or not a bundle).
func readContainerFile(ctx context.Context, c containerFileReader, id, path string) ([]byte, error) {
	res, err := c.CopyFromContainer(ctx, id, mobyclient.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s of the agent image: %w", path, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	hdr, err := tr.Next()
	if err != nil || hdr.Typeflag != tar.TypeReg {
		return nil, nil
	}
	if hdr.Size > maxImageFile {
		// Rewritten from a truncated read, the file would lose its tail.
		return nil, fmt.Errorf("read %s of the agent image: %d bytes, more than the %d clawker reads", path, hdr.Size, maxImageFile)
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxImageFile))
	if err != nil && !errors.Is(err, fs.ErrClosed) {
		return nil, fmt.Errorf("read %s of the agent image: %w", path, err)
	}
	return data, nil
}

// installEgressPolicy sends the project's egress: policy to the CP before
// the agent starts, so its first request is judged by it. A CP that is
// down is only a warning: the agent has no egress until it is up, and cp
// up keeps the last policy pushed.
func (a *app) installEgressPolicy(ctx context.Context, c containerInspector, project auth.ProjectSlug, eff *config.Effective) {
	if os.Getenv(EnvCPAdminAddr) == "" {
		if _, err := publishedAddr(ctx, c, consts.PortAdmin); err != nil {
			return // no CP: run warns about that already
		}
	}
	if _, err := a.pushEgress(ctx, project.String(), eff.Egress.V); err != nil {
		fmt.Fprintf(a.errOut, "clawker: warning: egress policy not installed (%v); the agent's egress follows the project's last policy\n", rpcError("egress", err))
	}
}
