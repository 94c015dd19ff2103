package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

func TestHomeCheckPerms(t *testing.T) {
	fresh := func(t *testing.T) Home {
		h := Home{Dir: filepath.Join(t.TempDir(), "home")}
		if _, err := h.Init(time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := h.CheckPerms(); err != nil {
			t.Fatalf("a home made by Init must pass: %v", err)
		}
		return h
	}
	if err := (Home{Dir: filepath.Join(t.TempDir(), "absent")}).CheckPerms(); err != nil {
		t.Fatalf("an absent home is fine (init creates it): %v", err)
	}
	cases := []struct {
		name, file string
		mode       os.FileMode
		want       string
	}{
		{"home group-writable", "", 0o770, "CLAWKER_HOME"},
		{"home world-writable", "", 0o777, "CLAWKER_HOME"},
		{"key group-readable", consts.CAKeyFile, 0o640, "read"},
		{"key world-readable", consts.CLIKeyFile, 0o604, "read"},
		{"signing key group-writable", consts.SigningKeyFile, 0o620, "replace"},
		{"CA cert world-writable", consts.CACertFile, 0o646, "replace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := fresh(t)
			p := h.Dir
			if c.file != "" {
				p = h.Path(c.file)
			}
			if err := os.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
			err := h.CheckPerms()
			if !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) ||
				!strings.Contains(err.Error(), "chmod") {
				t.Fatalf("want an ErrUnsafeHome naming %s and the fix, got %v", p, err)
			}
		})
	}
	t.Run("owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		h := fresh(t)
		for _, p := range []string{h.Path(consts.CPKeyFile), h.Dir} {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := h.CheckPerms(); !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), "owned by uid 65534") {
				t.Fatalf("%s owned by another user: got %v", p, err)
			}
		}
	})
	t.Run("extra file checked", func(t *testing.T) {
		h := fresh(t)
		if err := os.WriteFile(h.Path("cp-admin-addr"), []byte("x"), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(h.Path("cp-admin-addr"), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := h.CheckPerms("cp-admin-addr"); !errors.Is(err, ErrUnsafeHome) {
			t.Fatalf("world-writable extra file: got %v", err)
		}
	})
}
