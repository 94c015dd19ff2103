package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
)

// The staged names are consts.Staged*, shared with the CP's init plan.
// Everything is optional: a missing source stages nothing, and the
// matching init step is a no-op.

// stageFiles adds the staging tree to tb: git identity from the host
// user's git config, their SSH known_hosts, the project's hooks and its
// secrets (root-only here; the CP's secrets step installs them on the
// /run/secrets tmpfs for the agent's user at every start).
func stageFiles(ctx context.Context, tb *tarBuilder, root string, hooks config.Hooks, secrets map[string][]byte) error {
	if err := tb.dir(root, 0o755); err != nil {
		return err
	}
	// No home/ dir: the CLI has no home files to stage yet, and an empty
	// one would only make the config step fork to copy nothing (the plan
	// skips a step whose staged input is absent).
	if name, email := gitConfig(ctx, "user.name"), gitConfig(ctx, "user.email"); name != "" || email != "" {
		if err := tb.file(root+"/"+consts.StagedGitIdentity, 0o444, []byte(name+"\n"+email+"\n")); err != nil {
			return err
		}
	}
	if hd, err := os.UserHomeDir(); err == nil {
		if data, err := os.ReadFile(filepath.Join(hd, ".ssh", "known_hosts")); err == nil {
			if err := tb.file(root+"/"+consts.StagedKnownHosts, 0o444, data); err != nil {
				return err
			}
		}
	}
	for name, script := range map[string]string{consts.StagedHookPostInit: hooks.PostInit, consts.StagedHookPreRun: hooks.PreRun} {
		if script == "" {
			continue
		}
		if err := tb.file(root+"/"+name, 0o555, []byte(script)); err != nil {
			return err
		}
	}
	if len(secrets) == 0 {
		return nil
	}
	if err := tb.dir(root+"/"+consts.StagedSecrets, 0o700); err != nil {
		return err
	}
	for name, data := range secrets {
		if err := tb.file(root+"/"+consts.StagedSecrets+"/"+name, 0o400, data); err != nil {
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
