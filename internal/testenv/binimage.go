package testenv

import (
	"bytes"
	"context"
	"io"
	"os"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/binimage"
)

// ImportBinary imports ref into Docker: the static binary bin at /name
// (internal/binimage's layout), labelled label ("k=v").
func ImportBinary(ctx context.Context, docker *mobyclient.Client, ref, bin, name, label string) error {
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	layer, err := binimage.Tar(name, data)
	if err != nil {
		return err
	}
	res, err := docker.ImageImport(ctx, mobyclient.ImageImportSource{Source: bytes.NewReader(layer), SourceName: "-"}, ref,
		mobyclient.ImageImportOptions{Changes: []string{"LABEL " + label}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res)
	return res.Close()
}
