package consts

// Staged init inputs, relative to StagingDir: the CLI writes them into the
// container before start, the CP's init plan only reads them, and
// HelloAck.staged lists them by these names. Every input is optional.
const (
	StagedHome         = "home"
	StagedGitIdentity  = "git-identity" // line 1 name, line 2 email
	StagedKnownHosts   = "known_hosts"
	StagedHooks        = "hooks"
	StagedHookPostInit = StagedHooks + "/post-init"
	StagedHookPreRun   = StagedHooks + "/pre-run"
	StagedSecrets      = "secrets"
)
