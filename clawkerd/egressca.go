package clawkerd

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/egress/egressca"
	"github.com/clawker/clawker/internal/logger"
)

// trustEgressCA installs the egress CA a pod's bootstrap carries, as
// clawker run does on Docker before the start: at EgressCAPath (for
// NODE_EXTRA_CA_CERTS) and appended to each system bundle of the image.
// root prefixes every path (tests). A failure only means intercepted hosts
// are not trusted, so it is logged and the agent runs on.
func trustEgressCA(log *logger.Logger, root, bootstrapDir string) {
	certPEM, err := os.ReadFile(filepath.Join(bootstrapDir, consts.BootstrapEgressCA))
	if errors.Is(err, fs.ErrNotExist) {
		return // a Docker agent: clawker run wrote the files already
	}
	if err == nil {
		err = installEgressCA(root, certPEM)
	}
	if err != nil {
		log.Warn().Str("event", "egress_ca_not_installed").Err(err).
			Msg("egress CA not installed: TLS to hosts the gateway intercepts will fail")
		return
	}
	log.Info().Str("event", "egress_ca_installed").Msg("egress CA added to the image's trust bundles")
}

func installEgressCA(root string, certPEM []byte) error {
	dst := filepath.Join(root, consts.EgressCAPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, certPEM, 0o444); err != nil {
		return err
	}
	for _, b := range egressca.SystemBundles {
		p := filepath.Join(root, b)
		// Only regular files, as on Docker: a symlinked bundle points at
		// one of the others.
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if data, ok := egressca.Append(data, certPEM); ok {
			if err := os.WriteFile(p, data, fi.Mode().Perm()); err != nil {
				return err
			}
		}
	}
	return nil
}
