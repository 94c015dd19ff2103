package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/clawker/clawker/internal/binimage"
)

// binaryEnv is the override of each binary an image is built from.
var binaryEnv = map[string]string{"clawkerd": EnvClawkerdBin, "clawker-cp": EnvCPBin}

// BinaryImage builds ref in the local Docker engine: the static binary
// name (clawkerd or clawker-cp, found as run finds clawkerd) alone at
// /name, for a cluster to pull once it is pushed.
func (h hostApp) BinaryImage(ctx context.Context, ref, name string) error {
	env, ok := binaryEnv[name]
	if !ok {
		return fmt.Errorf("no image of %s", name)
	}
	path, err := findBinary(name, env)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	c, err := h.a.docker(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return binaryImage(ctx, c, ref, name, path)
}

func binaryImage(ctx context.Context, c imageImporter, ref, name, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	layer, err := binimage.Tar(name, data)
	if err != nil {
		return err
	}
	return importLayer(ctx, c, ref, layer, labelChanges(managedLabels(nil)), "clawker "+name)
}
