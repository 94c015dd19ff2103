package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/auth"
)

// The cached admin address spares the Docker lookup when it works, and
// anything wrong with it (stale port, not loopback, garbage) falls back to
// asking Docker.
func TestAdminAddrCache(t *testing.T) {
	t.Setenv(EnvCPAdminAddr, "")
	home := initHome(t)
	live := serveAdmin(t, home, nil)
	stale := closedAddr(t)
	cache := filepath.Join(home, adminAddrFile)
	for _, tc := range []struct {
		name        string
		cached      string
		dockerCalls int
	}{
		{"live cached address", live + "\n", 0},
		{"stale port", stale, 1},
		{"not loopback", "10.1.2.3:7443", 1},
		{"garbage", "no such address", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(cache, []byte(tc.cached), 0o600); err != nil {
				t.Fatal(err)
			}
			h := &harness{home: home}
			// events asks Docker nothing but the CP's address.
			_, stderr, code := h.run(t, "events", "--since", "0")
			if h.dockerCalls != tc.dockerCalls {
				t.Fatalf("%d Docker calls, want %d (exit %d: %s)", h.dockerCalls, tc.dockerCalls, code, stderr)
			}
			if tc.dockerCalls == 0 && code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if tc.dockerCalls > 0 && (code != ExitUnavailable || !strings.Contains(stderr, "Docker")) {
				t.Fatalf("fallback: exit %d stderr %q, want the Docker lookup's error", code, stderr)
			}
		})
	}
}

func TestReadAdminAddr(t *testing.T) {
	hm := auth.Home{Dir: initHome(t)}
	for in, want := range map[string]string{
		"127.0.0.1:4321\n": "127.0.0.1:4321",
		"127.0.0.1:0":      "",
		"[::1]:4321":       "",
		"localhost:4321":   "",
		"0.0.0.0:4321":     "",
	} {
		if err := os.WriteFile(hm.Path(adminAddrFile), []byte(in), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := readAdminAddr(hm); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
