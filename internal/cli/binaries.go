package cli

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Env overrides for the binaries the CLI ships into containers.
const (
	EnvClawkerdBin = "CLAWKER_CLAWKERD_BIN"
	EnvCPBin       = "CLAWKER_CP_BIN"
)

// findBinary locates a companion binary: the env override, else next to the
// running clawker executable, else $PATH. The binaries must be static
// (CGO_ENABLED=0) since they run inside arbitrary images.
func findBinary(name, envVar string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", envVar, p, err)
		}
		return p, checkStatic(p)
	}
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		p := filepath.Join(filepath.Dir(exe), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, checkStatic(p)
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, checkStatic(p)
	}
	return "", fmt.Errorf("cannot find the %s binary next to clawker or on $PATH; build it (make build) or set %s", name, envVar)
}

// checkStatic refuses a dynamically linked binary: it would fail with a
// confusing "no such file or directory" inside a container whose image
// lacks the host's libc.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s is not an ELF binary: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: rebuild it with CGO_ENABLED=0 (make build)", p)
		}
	}
	return nil
}
