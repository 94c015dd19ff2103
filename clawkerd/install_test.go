package clawkerd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestInstallCopiesItself(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	if code := Install([]string{dir}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(self)
	got, err := os.ReadFile(filepath.Join(dir, "clawkerd"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed binary differs from the running one (err %v)", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "clawkerd")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, want 0755", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o755 {
		t.Fatalf("dir mode %v, want 0755: an emptyDir starts world-writable", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left %d files, want only clawkerd", len(entries))
	}
	if code := Install(nil, &stderr); code != 2 {
		t.Fatalf("no DIR: exit %d, want 2", code)
	}
	if code := Install([]string{filepath.Join(dir, "missing")}, &stderr); code != 1 {
		t.Fatalf("missing DIR: exit %d, want 1", code)
	}
}
