package gitcred

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestFilter(t *testing.T) {
	req, err := FilterRequest([]byte("protocol=https\nhost=h\npath=p\nusername=u\npassword=leak\nurl=x\nwwwauth[]=y\nprotocol=dup\n\nhost=after-blank\n"))
	if err != nil || string(req) != "protocol=https\nhost=h\npath=p\nusername=u\n" {
		t.Fatalf("request: %q %v", req, err)
	}
	if _, err := FilterRequest([]byte("host=h\n")); err == nil {
		t.Fatal("request without protocol accepted")
	}
	rep, err := FilterReply([]byte("protocol=https\nhost=h\nusername=u\npassword=p\nquit=1\ncapability[]=authtype\n"))
	if err != nil || string(rep) != "protocol=https\nhost=h\nusername=u\npassword=p\n" {
		t.Fatalf("reply: %q %v", rep, err)
	}
	if _, err := FilterReply([]byte("protocol=https\nhost=h\n")); err == nil {
		t.Fatal("reply without password accepted")
	}
}

// TestServeFillsFromHostGit: the server answers from the host's git
// configuration (a store helper here) and answers nothing for a host it
// has no credential for, without ever prompting.
func TestServeFillsFromHostGit(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	dir := t.TempDir()
	store := filepath.Join(dir, "creds")
	if err := os.WriteFile(store, []byte("https://alice:s3cret@git.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gitconfig")
	if err := os.WriteFile(cfg, []byte("[credential]\n\thelper = store --file="+store+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", cfg)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	sdir, err := os.MkdirTemp("", "ckgc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sdir) })
	sock := filepath.Join(sdir, "s")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(lis, git, 10*time.Second, t.Logf) }()
	t.Cleanup(func() { _ = lis.Close(); <-done })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := Ask(ctx, sock, []byte("protocol=https\nhost=git.example\n"))
	if err != nil || string(out) != "protocol=https\nhost=git.example\nusername=alice\npassword=s3cret\n" {
		t.Fatalf("ask: %q %v", out, err)
	}
	if out, err := Ask(ctx, sock, []byte("protocol=https\nhost=other.example\n")); err == nil {
		t.Fatalf("unknown host answered: %q", out)
	}
}
