package daemon

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Config is the daemon's configuration. Precedence: flags > environment
// (CLAWKER_CP_*) > config file (--config, JSON) > defaults.
type Config struct {
	// ConfigDir holds the key material: cp.pem, cp-key.pem, ca.pem and
	// assertion-signing-pub.pem (never the CA or signing private keys).
	ConfigDir string `json:"config_dir"`
	// DataDir holds the registry and the redeemed-assertion store.
	DataDir string `json:"data_dir"`

	AdminAddr  string `json:"admin_addr"`
	AgentAddr  string `json:"agent_addr"`
	TokenAddr  string `json:"token_addr"`
	HealthAddr string `json:"health_addr"`

	// The egress gateway (egress.go): agents' DNS resolver, their HTTP(S)
	// proxy, and the upstream resolver ("" = /etc/resolv.conf).
	EgressDNSAddr     string `json:"egress_dns_addr"`
	EgressProxyAddr   string `json:"egress_proxy_addr"`
	EgressUpstreamDNS string `json:"egress_upstream_dns"`
	// EgressUpstreamCA is PEM of extra roots (besides the system's) for
	// intercepted upstreams (tests: the fake internet's CA).
	EgressUpstreamCA string `json:"egress_upstream_ca"`

	// UntrustedPolicy is what the CP does to an agent on AgentUntrusted:
	// off, log, pause, detach or kill.
	UntrustedPolicy string `json:"untrusted_policy"`

	// SSHAgentSock and GitCredSock are the host credential sources
	// mounted by `cp up` (credential forwarding); "" = that kind refused.
	SSHAgentSock string `json:"ssh_agent_sock"`
	GitCredSock  string `json:"git_credential_sock"`

	// Runtime is where agents run: docker (default) or kubernetes. On
	// kubernetes the CP watches Namespace's agent pods through Kubeconfig
	// ("" = the in-cluster service account).
	Runtime    string `json:"runtime"`
	Namespace  string `json:"namespace"`
	Kubeconfig string `json:"kubeconfig"`

	LogLevel        string        `json:"log_level"`
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`
}

// Defaults: listeners on every interface inside the CP container (Docker
// publishes admin and health on 127.0.0.1 only); key material in the CLI
// home so `clawker-cp` also runs as a host process after `clawker init`.
func defaults() Config {
	home, _ := auth.DefaultHomeDir()
	state := os.Getenv("XDG_STATE_HOME")
	if state == "" {
		if hd, err := os.UserHomeDir(); err == nil {
			state = filepath.Join(hd, ".local", "state")
		}
	}
	return Config{
		ConfigDir:       home,
		DataDir:         filepath.Join(state, "clawker-cp"),
		AdminAddr:       fmt.Sprintf(":%d", consts.PortAdmin),
		AgentAddr:       fmt.Sprintf(":%d", consts.PortAgent),
		TokenAddr:       fmt.Sprintf(":%d", consts.PortToken),
		HealthAddr:      fmt.Sprintf(":%d", consts.PortHealth),
		EgressDNSAddr:   fmt.Sprintf(":%d", consts.PortEgressDNS),
		EgressProxyAddr: fmt.Sprintf(":%d", consts.PortEgressProxy),
		LogLevel:        "info",
		UntrustedPolicy: PolicyLog,
		Runtime:         RuntimeDocker,
		Namespace:       defaultNamespace,
		ShutdownTimeout: 10 * time.Second,
	}
}

// Runtimes (Config.Runtime).
const (
	RuntimeDocker     = "docker"
	RuntimeKubernetes = "kubernetes"
	defaultNamespace  = "clawker"
)

// ErrHelp is returned by LoadConfig for -h/--help (usage already printed).
var ErrHelp = flag.ErrHelp

// LoadConfig builds the Config from args (without argv[0]), getenv and the
// optional JSON file named by --config / CLAWKER_CP_CONFIG.
func LoadConfig(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	cfg := defaults()
	fs := flag.NewFlagSet("clawker-cp", flag.ContinueOnError)
	fs.SetOutput(usage)
	file := fs.String("config", getenv("CLAWKER_CP_CONFIG"), "optional JSON config file")
	var flagged Config
	fs.StringVar(&flagged.ConfigDir, "config-dir", "", "directory with cp.pem, cp-key.pem, ca.pem, assertion-signing-pub.pem (env CLAWKER_CP_CONFIG_DIR)")
	fs.StringVar(&flagged.DataDir, "data-dir", "", "registry directory (env CLAWKER_CP_DATA_DIR)")
	fs.StringVar(&flagged.AdminAddr, "admin-addr", "", "AdminService listen address (env CLAWKER_CP_ADMIN_ADDR)")
	fs.StringVar(&flagged.AgentAddr, "agent-addr", "", "AgentService listen address (env CLAWKER_CP_AGENT_ADDR)")
	fs.StringVar(&flagged.TokenAddr, "token-addr", "", "token endpoint listen address (env CLAWKER_CP_TOKEN_ADDR)")
	fs.StringVar(&flagged.HealthAddr, "health-addr", "", "/healthz and /metrics listen address (env CLAWKER_CP_HEALTH_ADDR)")
	fs.StringVar(&flagged.LogLevel, "log-level", "", "debug|info|warn|error (env CLAWKER_CP_LOG_LEVEL)")
	fs.StringVar(&flagged.UntrustedPolicy, "untrusted-policy", "", "on AgentUntrusted: off|log|pause|detach|kill (env CLAWKER_CP_UNTRUSTED_POLICY; default log)")
	fs.StringVar(&flagged.Runtime, "runtime", "", "where agents run: docker|kubernetes (env CLAWKER_CP_RUNTIME; default docker)")
	fs.StringVar(&flagged.Namespace, "namespace", "", "kubernetes: the agents' namespace (env CLAWKER_CP_NAMESPACE; default "+defaultNamespace+")")
	fs.StringVar(&flagged.Kubeconfig, "kubeconfig", "", "kubernetes: kubeconfig path; empty = in-cluster (env CLAWKER_CP_KUBECONFIG)")
	fs.DurationVar(&flagged.ShutdownTimeout, "shutdown-timeout", 0, "graceful shutdown bound (env CLAWKER_CP_SHUTDOWN_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *file != "" {
		data, err := os.ReadFile(*file)
		if err != nil {
			return cfg, fmt.Errorf("read config %s: %w", *file, err)
		}
		var fileCfg Config
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fileCfg); err != nil {
			return cfg, fmt.Errorf("parse config %s: %w", *file, err)
		}
		overlay(&cfg, fileCfg)
	}
	var envCfg Config
	envCfg.ConfigDir = getenv("CLAWKER_CP_CONFIG_DIR")
	envCfg.DataDir = getenv("CLAWKER_CP_DATA_DIR")
	envCfg.AdminAddr = getenv("CLAWKER_CP_ADMIN_ADDR")
	envCfg.AgentAddr = getenv("CLAWKER_CP_AGENT_ADDR")
	envCfg.TokenAddr = getenv("CLAWKER_CP_TOKEN_ADDR")
	envCfg.HealthAddr = getenv("CLAWKER_CP_HEALTH_ADDR")
	envCfg.LogLevel = getenv("CLAWKER_CP_LOG_LEVEL")
	envCfg.SSHAgentSock = getenv(consts.EnvCPSSHAgentSock)
	envCfg.GitCredSock = getenv(consts.EnvCPGitCredSock)
	envCfg.EgressDNSAddr = getenv("CLAWKER_CP_EGRESS_DNS_ADDR")
	envCfg.EgressProxyAddr = getenv("CLAWKER_CP_EGRESS_PROXY_ADDR")
	envCfg.EgressUpstreamDNS = getenv("CLAWKER_CP_EGRESS_UPSTREAM_DNS")
	envCfg.EgressUpstreamCA = getenv("CLAWKER_CP_EGRESS_UPSTREAM_CA")
	envCfg.UntrustedPolicy = getenv("CLAWKER_CP_UNTRUSTED_POLICY")
	envCfg.Runtime = getenv("CLAWKER_CP_RUNTIME")
	envCfg.Namespace = getenv("CLAWKER_CP_NAMESPACE")
	envCfg.Kubeconfig = getenv("CLAWKER_CP_KUBECONFIG")
	if v := getenv("CLAWKER_CP_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return cfg, fmt.Errorf("CLAWKER_CP_SHUTDOWN_TIMEOUT: %w", err)
		}
		envCfg.ShutdownTimeout = d
	}
	overlay(&cfg, envCfg)
	overlay(&cfg, flagged)
	return cfg, cfg.validate()
}

func overlay(dst *Config, src Config) {
	set := func(d *string, s string) {
		if s != "" {
			*d = s
		}
	}
	set(&dst.ConfigDir, src.ConfigDir)
	set(&dst.DataDir, src.DataDir)
	set(&dst.AdminAddr, src.AdminAddr)
	set(&dst.AgentAddr, src.AgentAddr)
	set(&dst.TokenAddr, src.TokenAddr)
	set(&dst.HealthAddr, src.HealthAddr)
	set(&dst.LogLevel, src.LogLevel)
	set(&dst.SSHAgentSock, src.SSHAgentSock)
	set(&dst.GitCredSock, src.GitCredSock)
	set(&dst.EgressDNSAddr, src.EgressDNSAddr)
	set(&dst.EgressProxyAddr, src.EgressProxyAddr)
	set(&dst.EgressUpstreamDNS, src.EgressUpstreamDNS)
	set(&dst.EgressUpstreamCA, src.EgressUpstreamCA)
	set(&dst.UntrustedPolicy, src.UntrustedPolicy)
	set(&dst.Runtime, src.Runtime)
	set(&dst.Namespace, src.Namespace)
	set(&dst.Kubeconfig, src.Kubeconfig)
	if src.ShutdownTimeout > 0 {
		dst.ShutdownTimeout = src.ShutdownTimeout
	}
}

func (c Config) validate() error {
	var errs []error
	if c.ConfigDir == "" {
		errs = append(errs, errors.New("config dir is empty (set --config-dir or CLAWKER_HOME)"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty (set --data-dir)"))
	}
	if !validPolicy(c.UntrustedPolicy) {
		errs = append(errs, fmt.Errorf("untrusted policy %q: want off, log, pause, detach or kill", c.UntrustedPolicy))
	}
	switch c.Runtime {
	case RuntimeDocker:
	case RuntimeKubernetes:
		// A pod cannot be frozen: refuse a policy the CP could not carry
		// out rather than fall back to logging.
		if c.UntrustedPolicy == PolicyPause {
			errs = append(errs, errors.New("untrusted policy \"pause\": a pod cannot be paused; use detach or kill on the kubernetes runtime"))
		}
		if c.Namespace == "" {
			errs = append(errs, errors.New("namespace is empty (set --namespace)"))
		}
	default:
		errs = append(errs, fmt.Errorf("runtime %q: want docker or kubernetes", c.Runtime))
	}
	for name, a := range map[string]string{"admin": c.AdminAddr, "agent": c.AgentAddr, "token": c.TokenAddr, "health": c.HealthAddr} {
		if !strings.Contains(a, ":") {
			errs = append(errs, fmt.Errorf("%s address %q is not host:port", name, a))
		}
	}
	return errors.Join(errs...)
}

// Key material file paths inside ConfigDir.
func (c Config) path(name string) string { return filepath.Join(c.ConfigDir, name) }
