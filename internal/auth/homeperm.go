package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/clawker/clawker/internal/consts"
)

// ErrUnsafeHome marks a home or key file another user could read or
// replace; the message says which and how to fix it.
var ErrUnsafeHome = errors.New("unsafe permissions")

// homeKeyFiles are the private keys: no group or other access at all.
var homeKeyFiles = []string{consts.CAKeyFile, consts.CPKeyFile, consts.CLIKeyFile, consts.SigningKeyFile, consts.EgressCAKeyFile}

// homePublicFiles may be readable by others, never writable: a replaced
// CA cert or signing key would let another user mint trusted identities.
var homePublicFiles = []string{consts.CACertFile, consts.CPCertFile, consts.CLICertFile, consts.SigningPubFile, consts.EgressCAFile}

// CheckPerms refuses, as ssh does, a home directory or key file that is
// owned by another user (root excepted) or group- or world-writable, and a
// private key that is group- or world-readable. A missing home or file is
// fine (init creates them); extra names are checked like public files.
func (h Home) CheckPerms(extra ...string) error {
	if err := checkOwnerMode(h.Dir, "CLAWKER_HOME", 0o022, "chmod go-w"); err != nil {
		return err
	}
	for _, f := range homeKeyFiles {
		if err := checkOwnerMode(h.Path(f), "key file", 0o077, "chmod 600"); err != nil {
			return err
		}
	}
	for _, f := range append(append([]string(nil), homePublicFiles...), extra...) {
		if err := checkOwnerMode(h.Path(f), "file", 0o022, "chmod go-w"); err != nil {
			return err
		}
	}
	return nil
}

// checkOwnerMode stats path (following a symlink, as ssh does) and
// refuses a foreign owner or any bit of forbidden.
func checkOwnerMode(path, what string, forbidden fs.FileMode, fix string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); st.Uid != uint32(uid) && st.Uid != 0 {
			return fmt.Errorf("%w: %s %s is owned by uid %d, not you (uid %d): chown it to yourself or set %s to a home of your own",
				ErrUnsafeHome, what, path, st.Uid, uid, consts.EnvHome)
		}
	}
	if m := fi.Mode().Perm(); m&forbidden != 0 {
		return fmt.Errorf("%w: %s %s has mode %04o, which lets other users %s it: run %s %s",
			ErrUnsafeHome, what, path, m, verb(m&forbidden), fix, path)
	}
	return nil
}

func verb(bad fs.FileMode) string {
	if bad&0o022 != 0 {
		return "replace"
	}
	return "read"
}
