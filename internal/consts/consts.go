// Package consts holds the fixed names shared by the three programs: the
// wire and on-disk contracts of the clawker architecture spec. It owns no
// behaviour.
package consts

const (
	// NetworkName is the user-defined bridge every agent and the CP join.
	NetworkName = "clawker-net"

	LabelPurpose = "dev.clawker.purpose"
	LabelAgent   = "dev.clawker.agent"
	LabelProject = "dev.clawker.project"
	LabelManaged = "dev.clawker.managed"
	// LabelContained marks an agent pod the CP has cut off (contain
	// network-detach): no NetworkPolicy admits its traffic any more.
	LabelContained = "dev.clawker.contained"
	// LabelTest marks Docker objects created by tests so sweeps can find them.
	LabelTest = "dev.clawker.test"

	PurposeAgent        = "agent"
	PurposeControlPlane = "controlplane"
	// PurposeControlPlaneNet labels the CP's network namespace holder.
	PurposeControlPlaneNet = "controlplane-net"
	// PurposeClawkerdBin labels an agent's own volume holding clawkerd.
	PurposeClawkerdBin = "clawkerd-bin"

	// Certificate common names.
	ContainerClawkerd = "clawker-clawkerd"
	ControlPlaneCN    = "clawker-controlplane"
	CLICN             = "clawker-cli"
	CACN              = "clawker-ca"

	// ControlPlaneContainer is the CP container's name and DNS name on clawker-net.
	ControlPlaneContainer = "clawker-controlplane"
	// ControlPlaneNetContainer owns the CP's network namespace: its
	// clawker-net endpoint (with the alias above and the published ports)
	// and its endpoint on every agent network. The CP container shares it,
	// so replacing the CP joins no network.
	ControlPlaneNetContainer = "clawker-controlplane-net"
	ControlPlaneImage        = "clawker-controlplane:local"
	ControlPlaneVolume       = "clawker-cp-data"

	// URN prefixes of the agent leaf cert's URI SANs.
	AgentURNPrefix     = "urn:clawker:agent:"
	ContainerURNPrefix = "urn:clawker:container:"
	// PodAgentContainer is the container of an agent pod that runs
	// clawkerd (and the image's command under it).
	PodAgentContainer = "agent"
	// PodURNPrefix names the Kubernetes pod UID an agent pod's leaf binds.
	PodURNPrefix = "urn:clawker:pod:"

	PortSession = 7700 // clawkerd Session
	PortAgent   = 7444 // CP AgentService (gRPC)
	PortToken   = 7445 // CP token endpoint (HTTPS)
	PortAdmin   = 7443 // CP AdminService
	PortHealth  = 7446 // CP /healthz and /metrics (plain HTTP)

	PortEgressDNS   = 53   // CP egress gateway: agents' DNS resolver
	PortEgressProxy = 3128 // CP egress gateway: agents' HTTP(S) proxy
	// EgressCAFile / EgressCAKeyFile are the per-install TLS interception
	// CA in the CLI home (copied into the CP); clawker run stages the
	// certificate in each agent at EgressCAPath.
	EgressCAFile    = "egress-ca.pem"
	EgressCAKeyFile = "egress-ca-key.pem"
	EgressCAPath    = "/run/clawker/egress-ca.pem"

	BootstrapDir    = "/run/clawker/bootstrap"
	BootstrapCert   = "cert.pem"
	BootstrapKey    = "key.pem"
	BootstrapCA     = "ca.pem"
	BootstrapAssert = "assertion.jwt"
	// BootstrapEgressCA is the egress CA's cert in a pod's bootstrap:
	// clawkerd installs it at EgressCAPath and in the image's bundles.
	BootstrapEgressCA = "egress-ca.pem"
	// ClawkerdDir is where clawker run mounts the agent's clawkerd volume
	// (see docs/spec-notes.md); ClawkerdPath is the binary in it.
	ClawkerdDir     = "/run/clawker/bin"
	ClawkerdPath    = ClawkerdDir + "/clawkerd"
	InitMarkerPath  = "/var/lib/clawker/initialized"
	StagingDir      = "/run/clawker/staging"
	ClawkerdLogPath = "/var/log/clawker/clawkerd.log"
	TokenPath       = "/oauth2/token"
	ScopeRegister   = "agent:self:register"
	RegisterMethod  = "/clawker.agent.v1.AgentService/Register"
	// JWTBearerAssertionType is the RFC 7523 client_assertion_type.
	JWTBearerAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	AssertionAudience      = "clawker-controlplane/token"
	TokenAudience          = "clawker-controlplane/agent"

	EnvAgent   = "CLAWKER_AGENT"
	EnvProject = "CLAWKER_PROJECT"
	EnvUser    = "CLAWKER_USER"
	// EnvTTY=1 runs the user CMD on a pseudo-terminal (clawker run -t).
	EnvTTY         = "CLAWKER_TTY"
	EnvCPAgentAddr = "CLAWKER_CP_AGENT_ADDR"
	EnvCPTokenURL  = "CLAWKER_CP_TOKEN_URL"
	EnvHome        = "CLAWKER_HOME"
	EnvE2E         = "CLAWKER_E2E"

	// Files in the CLI home ($CLAWKER_HOME).
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	CPCertFile     = "cp.pem"
	CPKeyFile      = "cp-key.pem"
	CLICertFile    = "cli.pem"
	CLIKeyFile     = "cli-key.pem"
	SigningKeyFile = "assertion-signing-key.pem"
	SigningPubFile = "assertion-signing-pub.pem"
)
