package clawkerd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// spawn wires the pipeline and starts every stage. Stage i's stdout feeds
// stage i+1's stdin; every stage's stderr and the last stdout share one
// pipe, so the kernel merges them in write order (with separate_stderr,
// stderr has a pipe of its own, c.errR). A tty command has a terminal
// instead (spawnTTY).
func (c *shellCmd) spawn() (exits []<-chan exitStatus, outR, inW *os.File, err error) {
	if c.spec.GetAttachUserCmd() {
		return c.spawnAttach()
	}
	if c.spec.GetTty() != nil {
		return c.spawnTTY()
	}
	stages := c.spec.GetStages()
	var parentClose []*os.File // child ends, closed in clawkerd after start
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				_ = f.Close()
			}
		}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll([]*os.File{inR, inW})
		return nil, nil, nil, fmt.Errorf("output pipe: %w", err)
	}
	parentClose = append(parentClose, inR, outW)
	growPipe(outR)
	errW := outW
	if c.spec.GetSeparateStderr() {
		errR, w, perr := os.Pipe()
		if perr != nil {
			closeAll(parentClose)
			closeAll([]*os.File{inW, outR})
			return nil, nil, nil, fmt.Errorf("stderr pipe: %w", perr)
		}
		c.errR, errW = errR, w
		parentClose = append(parentClose, w)
	}
	fail := func(e error) ([]<-chan exitStatus, *os.File, *os.File, error) {
		c.signalNow(syscall.SIGKILL)
		for _, ch := range exits {
			<-ch
		}
		closeAll(parentClose)
		closeAll([]*os.File{inW, outR, c.errR})
		c.errR = nil
		return nil, nil, nil, e
	}

	prevOut := inR
	for i, st := range stages {
		stdout := outW
		var nextIn *os.File
		if i < len(stages)-1 {
			r, w, perr := os.Pipe()
			if perr != nil {
				return fail(fmt.Errorf("stage pipe: %w", perr))
			}
			parentClose = append(parentClose, r, w)
			stdout, nextIn = w, r
		}
		cmd, cerr := buildStageCmd(st, &c.sess.srv.cfg)
		if cerr != nil {
			return fail(fmt.Errorf("stage %d: %w", i, cerr))
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = prevOut, stdout, errW
		pid, ch, serr := c.sess.srv.procs.start(cmd)
		if serr != nil {
			return fail(fmt.Errorf("stage %d: %w", i, serr))
		}
		c.mu.Lock()
		c.pids = append(c.pids, pid)
		c.live = append(c.live, true)
		c.mu.Unlock()
		exits = append(exits, ch)
		prevOut = nextIn
	}
	closeAll(parentClose)
	c.markSpawned()
	return exits, outR, inW, nil
}

// markSpawned records that every stage exists and delivers the Signals
// that raced the spawn.
func (c *shellCmd) markSpawned() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spawned = true
	for _, sig := range c.pending {
		c.signalLocked(sig)
	}
	c.pending = nil
}

// buildStageCmd prepares one stage: resolved argv[0] (searched on the
// stage's own PATH), env overlay, cwd, own process group, privilege drop.
func buildStageCmd(st *clawkerdv1.PipeStage, cfg *Config) (*exec.Cmd, error) {
	id, err := cfg.identityFor(st)
	if err != nil {
		return nil, err
	}
	env := os.Environ()
	if _, set := st.GetEnv()["HOME"]; id.home != "" && !set {
		env = overlayEnv(env, map[string]string{"HOME": id.home})
	}
	env = overlayEnv(env, st.GetEnv())
	path, err := lookPath(st.GetArgv()[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}
	attr := &syscall.SysProcAttr{Setpgid: true, Credential: id.cred}
	return &exec.Cmd{
		Path:        path,
		Args:        st.GetArgv(),
		Env:         env,
		Dir:         stageCwd(st),
		SysProcAttr: attr,
	}, nil
}

func stageCwd(st *clawkerdv1.PipeStage) string {
	if st.GetCwd() == "" {
		return "/"
	}
	return st.GetCwd()
}

// overlayEnv returns base with the entries of over replacing or adding.
func overlayEnv(base []string, over map[string]string) []string {
	if len(over) == 0 {
		return base
	}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, replaced := over[k]; !replaced {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(over))
	for k := range over {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+over[k])
	}
	return out
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath resolves file like execvp, but on the given PATH rather than
// clawkerd's own, since a stage may override PATH.
func lookPath(file, pathEnv string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", fmt.Errorf("exec %q: %w", file, err)
		}
		return file, nil
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in PATH", file)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}
