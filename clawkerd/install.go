package clawkerd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install copies the running binary to dir/clawkerd (mode 0755). It is
// an agent pod's init container: the clawker image holds only clawkerd,
// so it copies itself into the volume the agent's container runs it from.
func Install(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: clawkerd install DIR")
		return 2
	}
	if err := install(args[0]); err != nil {
		fmt.Fprintln(stderr, "clawkerd install:", err)
		return 1
	}
	return 0
}

func install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	// Write beside the target and rename, so a restarted init container
	// never leaves a half-written binary where the agent runs it.
	tmp, err := os.CreateTemp(dir, ".clawkerd-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("copy: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "clawkerd")); err != nil {
		return err
	}
	// An emptyDir is created world-writable: nobody but root may replace
	// what is in it.
	return os.Chmod(dir, 0o755)
}
