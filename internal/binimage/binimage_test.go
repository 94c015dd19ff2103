package binimage

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

func TestTarHoldsTheBinaryAndTheEtcFiles(t *testing.T) {
	data, err := Tar("clawkerd", []byte("\x7fELF..."))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	got := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h.Mode
	}
	want := map[string]int64{"clawkerd": 0o755, "etc/passwd": 0o644, "etc/group": 0o644, "etc/nsswitch.conf": 0o644}
	if len(got) != len(want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	for n, m := range want {
		if got[n] != m {
			t.Errorf("%s: mode %o, want %o", n, got[n], m)
		}
	}
}
