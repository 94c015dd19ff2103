package config

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"

	units "github.com/docker/go-units"
)

// Compiled on first use: a package-level MustCompile runs at every CLI
// start, config-reading command or not (clawker exec, clawker version).
var (
	envKeyRE     = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretNameRE = lazyRegexp(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)
)

func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// lineErr prefixes err with the line of key when it is known.
func lineErr(lines map[string]int, key string, format string, args ...any) error {
	if l := lines[key]; l > 0 {
		return fmt.Errorf("line %d: %s: %s", l, key, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))
}

func (f *File) validate(lines map[string]int) error {
	for _, k := range sortedKeys(f.Env) {
		if err := CheckEnvKey(k); err != nil {
			return lineErr(lines, "env."+k, "%v", err)
		}
	}
	for _, name := range sortedKeys(f.Secrets) {
		s := f.Secrets[name]
		key := "secrets." + name
		if !secretNameRE().MatchString(name) {
			return lineErr(lines, key, "a secret name is letters, digits, _ . - (it becomes /run/secrets/NAME)")
		}
		if (s.File == "") == (s.Env == "") {
			return lineErr(lines, key, "give exactly one of file: or env:")
		}
		if s.Env != "" && !envKeyRE().MatchString(s.Env) {
			return lineErr(lines, key, "env %q is not a variable name", s.Env)
		}
	}
	for _, v := range f.Volumes {
		if err := CheckVolume(v); err != nil {
			return lineErr(lines, "volumes", "%v", err)
		}
	}
	if err := f.Resources.check(); err != nil {
		return lineErr(lines, "resources", "%v", err)
	}
	if f.Egress != nil {
		if err := f.Egress.Validate(); err != nil {
			return lineErr(lines, "egress", "%v", err)
		}
	}
	for _, s := range f.State {
		if err := CheckStatePath(s); err != nil {
			return lineErr(lines, "state", "%v", err)
		}
	}
	if f.Workdir != "" && !path.IsAbs(f.Workdir) {
		return lineErr(lines, "workdir", "%q is not an absolute path", f.Workdir)
	}
	return nil
}

// CheckEnvKey refuses names that are not variable names and the
// CLAWKER_ namespace, which clawker sets itself.
func CheckEnvKey(k string) error {
	if !envKeyRE().MatchString(k) {
		return fmt.Errorf("%q is not a variable name", k)
	}
	if strings.HasPrefix(k, "CLAWKER_") {
		return fmt.Errorf("%q: CLAWKER_ variables are set by clawker", k)
	}
	return nil
}

// CheckVolume validates SRC:/container/path[:ro|rw]; reserved targets are
// the CLI's to check (it owns the list).
func CheckVolume(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") ||
		(len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
		return fmt.Errorf("volume %q: want SRC:/container/path[:ro]", v)
	}
	return nil
}

// CheckStatePath accepts "~/rel" (the agent user's home) or an absolute
// path, never the home itself or a path that climbs out of it.
func CheckStatePath(p string) error {
	rel, ok := strings.CutPrefix(p, "~/")
	switch {
	case ok:
		c := path.Clean(rel)
		if c == "." || c == ".." || strings.HasPrefix(c, "../") || path.IsAbs(c) {
			return fmt.Errorf("state path %q: want a path under ~/, not ~ itself", p)
		}
	case path.IsAbs(p):
		if path.Clean(p) == "/" {
			return fmt.Errorf("state path %q: / cannot be kept", p)
		}
	default:
		return fmt.Errorf("state path %q: want ~/path or /absolute/path", p)
	}
	return nil
}

// MemoryBytes parses a size such as "2g" or "512m"; "" is 0.
func MemoryBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory %q: want a size such as 512m or 2g", s)
	}
	if n < 6*1024*1024 {
		return 0, fmt.Errorf("memory %q: Docker's minimum is 6m", s)
	}
	return n, nil
}

func (r Resources) check() error {
	if r.CPUs < 0 {
		return fmt.Errorf("cpus %v: want a positive number", r.CPUs)
	}
	if r.PidsLimit < -1 {
		return fmt.Errorf("pids_limit %d: want a positive number (-1: unlimited)", r.PidsLimit)
	}
	_, err := MemoryBytes(r.Memory)
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
