package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// importRecorder is the Docker boundary: it keeps what was imported.
type importRecorder struct {
	ref     string
	layer   []byte
	changes []string
}

func (r *importRecorder) ImageImport(_ context.Context, src mobyclient.ImageImportSource, ref string, o mobyclient.ImageImportOptions) (mobyclient.ImageImportResult, error) {
	r.ref, r.changes = ref, o.Changes
	r.layer, _ = io.ReadAll(src.Source)
	return io.NopCloser(bytes.NewReader(nil)), nil
}

func TestBinaryImageHoldsTheBinaryAloneAndClawkersLabels(t *testing.T) {
	t.Setenv(EnvExtraLabels, consts.LabelTest+"=unit")
	bin := filepath.Join(t.TempDir(), "clawkerd")
	if err := os.WriteFile(bin, []byte("\x7fELF static"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &importRecorder{}
	if err := binaryImage(context.Background(), r, "reg.example/clawker/clawkerd:v1", "clawkerd", bin); err != nil {
		t.Fatal(err)
	}
	if r.ref != "reg.example/clawker/clawkerd:v1" {
		t.Fatalf("imported %q", r.ref)
	}
	tr := tar.NewReader(bytes.NewReader(r.layer))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "clawkerd" {
			b, _ := io.ReadAll(tr)
			if string(b) != "\x7fELF static" || h.Mode != 0o755 {
				t.Fatalf("/clawkerd: %q mode %o", b, h.Mode)
			}
		}
	}
	if !slices.Contains(names, "clawkerd") || !slices.Contains(names, "etc/passwd") {
		t.Fatalf("layer holds %v: want /clawkerd and the /etc files", names)
	}
	for _, want := range []string{"LABEL " + consts.LabelManaged + "=true", "LABEL " + consts.LabelTest + "=unit"} {
		if !slices.Contains(r.changes, want) {
			t.Fatalf("changes %v lack %q", r.changes, want)
		}
	}
}
