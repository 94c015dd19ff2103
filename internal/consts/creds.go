package consts

// Credential forwarding (issue 17 §3; cred-forward/v1).
const (
	// LabelCredentials on an agent container lists the kinds its project
	// opted in to ("ssh_agent,git"); the CP's gate reads it.
	LabelCredentials = "dev.clawker.credentials"
	// CPSSHAgentSock and CPGitCredDir are where `cp up` mounts the host credential sources into
	// the CP container: the host ssh-agent socket and the directory of
	// the host-side git credential server's socket.
	CPSSHAgentSock = "/run/clawker/host/ssh-agent.sock"
	CPGitCredDir   = "/run/clawker/host/git"
	// GitCredSockName is the git credential server's socket, in
	// CLAWKER_HOME/run on the host and CPGitCredDir in the CP.
	GitCredSockName = "git-credential.sock"
	// Env of the CP naming the sources it may use ("" = none).
	EnvCPSSHAgentSock = "CLAWKER_CP_SSH_AUTH_SOCK"
	EnvCPGitCredSock  = "CLAWKER_CP_GIT_CREDENTIAL_SOCK"
)

// EnvCredentials on an agent lists its opted-in kinds for clawkerd,
// which serves the matching sockets and sets SSH_AUTH_SOCK / git's helper.
const EnvCredentials = "CLAWKER_CREDENTIALS"

// Credential kind names as written in clawker.yaml's credentials:, the
// agent's EnvCredentials and its LabelCredentials (clawkerdv1 parses them).
// Here rather than in the API package so the CLI, which only writes them,
// does not link (and initialise) clawkerd's protocol.
const (
	CredNameSSHAgent = "ssh_agent"
	CredNameGit      = "git"
)
