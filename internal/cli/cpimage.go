package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/binimage"
	"github.com/clawker/clawker/internal/consts"
)

// Paths inside the CP image / container.
const (
	cpBinaryPath = "/clawker-cp"
	cpConfigDir  = "/etc/clawker"
	cpDataDir    = "/var/lib/clawker-cp"
	// labelCPBinary records the SHA-256 of the clawker-cp binary an image
	// was imported from, so `cp up` re-imports only when the binary changed.
	labelCPBinary = "dev.clawker.cp-binary-sha256"
)

// ensureCPImage imports clawker-controlplane:local from the static clawker-cp
// binary unless an image built from the same binary already exists. No
// registry and no Dockerfile: the image is one static binary plus the few
// /etc files a Go program reads.
func ensureCPImage(ctx context.Context, c cpImageDocker, binPath string) (string, error) {
	sum, err := fileSHA256(binPath)
	if err != nil {
		return "", err
	}
	img, err := c.ImageInspect(ctx, consts.ControlPlaneImage)
	switch {
	case err == nil:
		if img.Config != nil && img.Config.Labels[labelCPBinary] == sum {
			return img.ID, nil
		}

	case !cerrdefs.IsNotFound(err):
		return "", fmt.Errorf("inspect image %s: %w", consts.ControlPlaneImage, err)
	}
	tb := newTarBuilder(timeZero)
	if err := tb.hostFile(cpBinaryPath[1:], 0o755, binPath); err != nil {
		return "", err
	}
	for _, f := range binimage.EtcFiles() {
		if err := tb.file(f.Name, f.Mode, f.Data); err != nil {
			return "", err
		}
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"tmp", 0o1777}, {cpConfigDir[1:], 0o700}, {cpDataDir[1:], 0o700}, {"root", 0o700}} {
		if err := tb.dir(d.name, d.mode); err != nil {
			return "", err
		}
	}
	data, err := tb.bytes()
	if err != nil {
		return "", err
	}
	changes := []string{
		fmt.Sprintf(`ENTRYPOINT ["%s"]`, cpBinaryPath),
		fmt.Sprintf(`CMD ["--config-dir=%s", "--data-dir=%s"]`, cpConfigDir, cpDataDir),
	}
	labels := managedLabels(map[string]string{labelCPBinary: sum, consts.LabelPurpose: consts.PurposeControlPlane})
	if err := importLayer(ctx, c, consts.ControlPlaneImage, data, append(changes, labelChanges(labels)...), "clawker control plane"); err != nil {
		return "", err
	}
	img, err = c.ImageInspect(ctx, consts.ControlPlaneImage)
	if err != nil {
		return "", fmt.Errorf("inspect imported image %s: %w", consts.ControlPlaneImage, err)
	}
	return img.ID, nil
}

// labelChanges are LABEL changes for an image import, in key order.
func labelChanges(labels map[string]string) []string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	changes := make([]string, 0, len(keys))
	for _, k := range keys {
		changes = append(changes, fmt.Sprintf("LABEL %s=%s", k, labels[k]))
	}
	return changes
}

// imageImporter is the Docker call importLayer makes.
type imageImporter interface {
	ImageImport(ctx context.Context, source mobyclient.ImageImportSource, ref string, options mobyclient.ImageImportOptions) (mobyclient.ImageImportResult, error)
}

// importLayer imports ref from one layer tarball with changes.
func importLayer(ctx context.Context, c imageImporter, ref string, layer []byte, changes []string, msg string) error {
	res, err := c.ImageImport(ctx, mobyclient.ImageImportSource{Source: bytes.NewReader(layer), SourceName: "-"},
		ref, mobyclient.ImageImportOptions{Changes: changes, Message: msg})
	if err != nil {
		return fmt.Errorf("import image %s: %w", ref, err)
	}
	_, _ = io.Copy(io.Discard, res)
	return res.Close()
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// pruneOldCPImages removes control plane images other than keep (earlier
// imports left untagged by a re-import). Images still used by a container
// are skipped by the engine; errors are ignored: this is housekeeping.
func pruneOldCPImages(ctx context.Context, c cpImageDocker, keep string) {
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeControlPlane)
	res, err := c.ImageList(ctx, mobyclient.ImageListOptions{All: true, Filters: f})
	if err != nil {
		return
	}
	for _, img := range res.Items {
		if img.ID != keep && len(img.RepoTags) == 0 {
			_, _ = c.ImageRemove(ctx, img.ID, mobyclient.ImageRemoveOptions{})
		}
	}
}
