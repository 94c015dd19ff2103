package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Staging files the CP's init plan reads from the container (under
// consts.StagingDir). Everything is optional: a missing source stages
// nothing, and the matching init step is a no-op.
const (
	stagingGitIdentity = "git-identity"
	stagingKnownHosts  = "known_hosts"
	stagingHooks       = "hooks"
	stagingPostInit    = "post-init"
	stagingPreRun      = "pre-run"
)

// stageFiles adds the staging tree to tb: git identity from the host
// user's git config, their SSH known_hosts, and the project's hooks from
// clawker.yaml in projectDir.
func stageFiles(ctx context.Context, tb *tarBuilder, root, projectDir string) error {
	if err := tb.dir(root, 0o755); err != nil {
		return err
	}
	// No home/ dir: the CLI has no home files to stage yet, and an empty
	// one would only make the config step fork to copy nothing (the plan
	// skips a step whose staged input is absent).
	if name, email := gitConfig(ctx, "user.name"), gitConfig(ctx, "user.email"); name != "" || email != "" {
		if err := tb.file(root+"/"+stagingGitIdentity, 0o444, []byte(name+"\n"+email+"\n")); err != nil {
			return err
		}
	}
	if hd, err := os.UserHomeDir(); err == nil {
		if data, err := os.ReadFile(filepath.Join(hd, ".ssh", "known_hosts")); err == nil {
			if err := tb.file(root+"/"+stagingKnownHosts, 0o444, data); err != nil {
				return err
			}
		}
	}
	hooks, err := readProjectHooks(filepath.Join(projectDir, "clawker.yaml"))
	if err != nil {
		return err
	}
	for name, script := range hooks {
		if err := tb.file(root+"/"+stagingHooks+"/"+name, 0o555, []byte(script)); err != nil {
			return err
		}
	}
	return nil
}

func gitConfig(ctx context.Context, key string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "config", "--get", key).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(bytes.TrimSpace(out)))
}
