package clawkerd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Config is everything a Server needs. TLS material is carried directly so
// tests (and CP-side tests of other packages) can run a Server without
// bootstrap files on disk; LoadConfig fills it from the container.
type Config struct {
	// Cert is the agent leaf (server cert of the listener, client cert of
	// the Register call). CAPool verifies the CP both ways.
	Cert   tls.Certificate
	CAPool *x509.CertPool

	AgentName string // CLAWKER_AGENT
	Project   string // CLAWKER_PROJECT
	// User is the resolved CLAWKER_USER the user CMD runs as; nil = root.
	User *ExecUser
	// RootHome is root's home from passwd, reported to the CP as the init
	// steps' home when User is nil; empty means /root.
	RootHome string
	// StagingDir is the CLI's init staging tree (default
	// consts.StagingDir), listed in HelloAck.
	StagingDir string
	// ShellPath is the shell the CP's init steps run (default /bin/sh);
	// HelloAck reports whether it exists.
	ShellPath string
	// PasswdFile and GroupFile resolve PipeStage.user (default
	// /etc/passwd, /etc/group).
	PasswdFile, GroupFile string
	// Workdir is reported in HelloAck as the default exec cwd: clawkerd's
	// cwd at start, i.e. the image WORKDIR. "" = not reported.
	Workdir string

	// CPAgentAddr is host:port of the CP AgentService; CPTokenURL the
	// token endpoint. Both are needed only for RegisterRequired.
	CPAgentAddr string
	CPTokenURL  string
	// Assertion is the client assertion; when empty it is read from
	// AssertionPath at Register time.
	Assertion     string
	AssertionPath string

	// InitMarkerPath is the init marker file (default consts.InitMarkerPath).
	InitMarkerPath string
	// Credentials are the opted-in forwarded credential kinds
	// (CLAWKER_CREDENTIALS); their sockets live in CredSocketDir (default
	// DefaultCredSocketDir).
	Credentials   []clawkerdv1.CredKind
	CredSocketDir string

	// UserCmd is the user CMD (everything after "--"); may be empty.
	UserCmd []string
	// TTY runs the user CMD on a pseudo-terminal that Sessions can attach
	// to (CLAWKER_TTY=1).
	TTY bool

	// ReapAll makes the process table reap every child with wait4(-1),
	// handing statuses of known pids to their waiters (PID 1 / subreaper
	// duty). Off, each child is waited for individually, which is what a
	// non-PID-1 embedding (tests) needs to not steal other statuses.
	ReapAll bool

	// Console receives print_output echoes and is the user CMD's stdout
	// and stderr. Default os.Stdout.
	Console io.Writer

	// Keepalive tuning; zero values mean the defaults below.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// OutputDrainGrace bounds how long output is still read after every
	// stage exited, for background descendants holding the pipe.
	OutputDrainGrace time.Duration
}

const (
	defaultKeepaliveTime    = 20 * time.Second
	defaultKeepaliveTimeout = 10 * time.Second
	defaultDrainGrace       = 500 * time.Millisecond
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.InitMarkerPath == "" {
		out.InitMarkerPath = consts.InitMarkerPath
	}
	if out.CredSocketDir == "" {
		out.CredSocketDir = DefaultCredSocketDir
	}
	if out.StagingDir == "" {
		out.StagingDir = consts.StagingDir
	}
	if out.ShellPath == "" {
		out.ShellPath = "/bin/sh"
	}
	if out.PasswdFile == "" {
		out.PasswdFile = "/etc/passwd"
	}
	if out.GroupFile == "" {
		out.GroupFile = "/etc/group"
	}
	if out.Console == nil {
		out.Console = os.Stdout
	}
	if out.KeepaliveTime == 0 {
		out.KeepaliveTime = defaultKeepaliveTime
	}
	if out.KeepaliveTimeout == 0 {
		out.KeepaliveTimeout = defaultKeepaliveTimeout
	}
	if out.OutputDrainGrace == 0 {
		out.OutputDrainGrace = defaultDrainGrace
	}
	return out
}

// ConfigError is a startup configuration problem: cmd/clawkerd exits 2.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return "clawkerd: configuration error: " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, a ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, a...)}
}

// Options are the process-level settings parsed from argv and env.
type Options struct {
	Config
	ListenAddr   string
	BootstrapDir string
	LogPath      string // "" disables the log file (stderr only)
	LogLevel     string
	PasswdPath   string
	GroupPath    string
}

// ParseOptions parses clawkerd's argv (without argv[0]) and environment.
// Flags come before "--"; everything after it is the user CMD. Files are
// read and validated: any problem is a *ConfigError.
func ParseOptions(args []string, getenv func(string) string) (*Options, error) {
	fs := flag.NewFlagSet("clawkerd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &Options{}
	fs.StringVar(&o.ListenAddr, "listen", envOr(getenv, "CLAWKERD_LISTEN", fmt.Sprintf(":%d", consts.PortSession)), "Session listen address")
	fs.StringVar(&o.BootstrapDir, "bootstrap-dir", envOr(getenv, "CLAWKERD_BOOTSTRAP_DIR", consts.BootstrapDir), "bootstrap directory")
	fs.StringVar(&o.InitMarkerPath, "init-marker", envOr(getenv, "CLAWKERD_INIT_MARKER", consts.InitMarkerPath), "init marker path")
	fs.StringVar(&o.LogPath, "log-file", envOr(getenv, "CLAWKERD_LOG_FILE", consts.ClawkerdLogPath), "audit log file (empty: stderr only)")
	fs.StringVar(&o.LogLevel, "log-level", envOr(getenv, "CLAWKERD_LOG_LEVEL", "info"), "log level")
	fs.StringVar(&o.PasswdPath, "passwd", "/etc/passwd", "passwd file")
	fs.StringVar(&o.GroupPath, "group", "/etc/group", "group file")
	subreaper := fs.Bool("reap-all", false, "reap every child even when not PID 1 (sets PR_SET_CHILD_SUBREAPER)")
	if err := fs.Parse(args); err != nil {
		return nil, configErrorf("flags: %w", err)
	}
	o.UserCmd = fs.Args()
	o.PasswdFile, o.GroupFile, o.Workdir = o.PasswdPath, o.GroupPath, startWorkdir()
	o.ReapAll = *subreaper || os.Getpid() == 1

	o.AgentName = getenv(consts.EnvAgent)
	if o.AgentName == "" {
		return nil, configErrorf("%s is required", consts.EnvAgent)
	}
	if _, err := auth.NewAgentName(o.AgentName); err != nil {
		return nil, configErrorf("%s: %w", consts.EnvAgent, err)
	}
	o.Project = getenv(consts.EnvProject)
	if o.Project != "" {
		if _, err := auth.NewProjectSlug(o.Project); err != nil {
			return nil, configErrorf("%s: %w", consts.EnvProject, err)
		}
	}
	kinds, err := clawkerdv1.ParseCredKinds(getenv(consts.EnvCredentials))
	if err != nil {
		return nil, configErrorf("%s: %w", consts.EnvCredentials, err)
	}
	o.Credentials, o.CredSocketDir = kinds, DefaultCredSocketDir
	o.CPAgentAddr = getenv(consts.EnvCPAgentAddr)
	o.CPTokenURL = getenv(consts.EnvCPTokenURL)
	o.TTY = getenv(consts.EnvTTY) == "1"

	if spec := getenv(consts.EnvUser); spec != "" {
		u, err := ResolveUser(spec, o.PasswdPath, o.GroupPath)
		if err != nil {
			return nil, &ConfigError{Err: err}
		}
		o.User = u
	} else if u, err := ResolveUser("0", o.PasswdPath, o.GroupPath); err == nil && u.Home != "/" {
		// Best effort, for HelloAck only: the user CMD keeps User nil.
		o.RootHome = u.Home
	}

	dir := o.BootstrapDir
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, consts.BootstrapCert), filepath.Join(dir, consts.BootstrapKey))
	if err != nil {
		return nil, configErrorf("bootstrap cert/key in %s: %w", dir, err)
	}
	pool, err := auth.ReadCertPool(filepath.Join(dir, consts.BootstrapCA))
	if err != nil {
		return nil, configErrorf("bootstrap CA: %w", err)
	}
	// The assertion may be gone: clawkerd removes it after the exchange,
	// and a restarted agent is already registered. A Register that does
	// need it fails then, closed.
	o.AssertionPath = filepath.Join(dir, consts.BootstrapAssert)
	o.Cert = cert
	o.CAPool = pool
	return o, nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// readAssertion returns the configured assertion or reads it from disk.
func (c *Config) readAssertion() (string, error) {
	if c.Assertion != "" {
		return c.Assertion, nil
	}
	if c.AssertionPath == "" {
		return "", errors.New("no client assertion configured")
	}
	b, err := os.ReadFile(c.AssertionPath)
	if err != nil {
		return "", fmt.Errorf("read assertion: %w", err)
	}
	a := strings.TrimSpace(string(b))
	if a == "" {
		return "", errors.New("assertion file is empty")
	}
	return a, nil
}
