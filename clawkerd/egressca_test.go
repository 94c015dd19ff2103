package clawkerd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// A pod's bootstrap carries the egress CA: clawkerd puts it where
// NODE_EXTRA_CA_CERTS points and appends it to the image's regular
// bundles, once however often it starts.
func TestTrustEgressCAInstallsThePodsCA(t *testing.T) {
	root, boot := t.TempDir(), t.TempDir()
	ca := "-----BEGIN CERTIFICATE-----\negress\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(filepath.Join(boot, consts.BootstrapEgressCA), []byte(ca), 0o400); err != nil {
		t.Fatal(err)
	}
	debian := filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")
	if err := os.MkdirAll(filepath.Dir(debian), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(debian, []byte("system roots"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A bundle that is a link is skipped (on Alpine it names the one
	// above); here it names a file of no bundle, which must stay as it is.
	other := filepath.Join(root, "etc/other-roots.pem")
	if err := os.WriteFile(other, []byte("other roots"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../other-roots.pem", filepath.Join(root, "etc/ssl/cert.pem")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		trustEgressCA(logger.Nop(), root, boot)
	}
	b, err := os.ReadFile(debian)
	if err != nil || string(b) != "system roots\n"+ca {
		t.Fatalf("bundle %q, %v: want the roots and the CA once", b, err)
	}
	if b, _ := os.ReadFile(other); string(b) != "other roots" {
		t.Fatalf("a linked bundle's target was written: %q", b)
	}
	fi, err := os.Stat(filepath.Join(root, consts.EgressCAPath))
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("CA at %s: %v %v, want readable by the user CMD", consts.EgressCAPath, fi, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt")); err == nil {
		t.Fatal("a bundle the image does not have was created")
	}
}

// Without the file (every Docker agent) nothing is touched.
func TestTrustEgressCAWithoutOneLeavesTheImage(t *testing.T) {
	root := t.TempDir()
	trustEgressCA(logger.Nop(), root, t.TempDir())
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Fatalf("wrote %v", ents)
	}
}
