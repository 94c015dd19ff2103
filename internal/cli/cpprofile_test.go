package cli

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCPProfileWritesAPrivatePprofFile(t *testing.T) {
	home := initHome(t)
	t.Setenv(EnvCPAdminAddr, serveAdmin(t, home, nil))
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--kind", "heap"},
		{"--kind", "cpu", "--seconds", "1"},
	} {
		out := filepath.Join(dir, args[1]+".pprof")
		if err := os.WriteFile(out, []byte("stale"), 0o644); err != nil { // replaced, not appended to
			t.Fatal(err)
		}
		h := &harness{home: home}
		_, stderr, code := h.run(t, append([]string{"cp", "profile", "-o", out}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", out, fi.Mode().Perm())
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%v: not gzip: %v", args, err)
		}
		if raw, err := io.ReadAll(zr); err != nil || len(raw) == 0 {
			t.Fatalf("%v: gunzip: %d bytes, %v", args, len(raw), err)
		}
		if h.dockerCalls != 0 {
			t.Errorf("profile with a pinned admin address called Docker")
		}
	}
	// Nothing but the profiles is left in the directory (no temp files).
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Errorf("directory holds %d entries, want the 2 profiles", len(ents))
	}
}

func TestCPProfileBadInputs(t *testing.T) {
	home := initHome(t)
	out := filepath.Join(t.TempDir(), "p.pprof")
	for name, tc := range map[string]struct {
		args []string
		msg  string
	}{
		"unknown kind":      {[]string{"--kind", "disk", "-o", out}, "--kind must be"},
		"no output":         {[]string{"--kind", "heap"}, "-o"},
		"zero seconds":      {[]string{"--kind", "cpu", "--seconds", "0", "-o", out}, "1 to 120"},
		"too many seconds":  {[]string{"--kind", "block", "--seconds", "121", "-o", out}, "1 to 120"},
		"seconds with heap": {[]string{"--kind", "heap", "--seconds", "5", "-o", out}, "cpu, mutex and block"},
	} {
		h := &harness{home: home}
		_, stderr, code := h.run(t, append([]string{"cp", "profile"}, tc.args...)...)
		if code != ExitUsage || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%s: exit %d stderr %q, want %d and %q", name, code, stderr, ExitUsage, tc.msg)
		}
		if h.dockerCalls != 0 {
			t.Errorf("%s reached Docker", name)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused request wrote %s", out)
	}
}
