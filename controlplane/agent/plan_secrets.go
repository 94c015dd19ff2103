package agent

import "github.com/clawker/clawker/internal/consts"

// StepSecrets installs the project's secrets at every container start.
const StepSecrets = "secrets"

// SecretsDir is the tmpfs (HostConfig.Tmpfs, made by the CLI) that holds
// the secrets while the container runs.
const SecretsDir = "/run/secrets"

// StagingSecrets is where the CLI stages secrets before start.
const StagingSecrets = consts.StagingDir + "/" + consts.StagedSecrets // root-only, 0400 files

// secretsStep copies the staged secrets onto the /run/secrets tmpfs, owned
// by the agent's user, 0400 in a 0500 dir, so no other uid reads them. It
// is a boot step: a tmpfs is empty after every start. A failure stops the
// agent (exitOnNonZero) rather than run it without its secrets.
func secretsStep() step {
	return step{name: StepSecrets, script: secretsScript, timeout: builtinStepTimeout,
		exitOnNonZero: true, input: consts.StagedSecrets}
}

func secretsScript(u userInfo) string {
	return prelude(u) + `S=` + StagingSecrets + `; D=` + SecretsDir + `
[ -d "$S" ] || exit 0
for t in cp chown chmod rm; do
  command -v "$t" >/dev/null 2>&1 || { echo "secrets: the image has no $t" >&2; exit 1; }
done
[ -d "$D" ] || { echo "secrets: $D is not mounted" >&2; exit 1; }
# This runs as root in a dir the agent user owned on a previous start: take
# it back first, drop whatever was planted (rm never follows a link), and
# hand it over only when every file is in place, so no write follows a link.
chown -h 0:0 "$D" && chmod 0700 "$D" || exit 1
rm -rf -- "$D"/* "$D"/.[!.]* || exit 1
for f in "$S"/* "$S"/.[!.]*; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  n="${f##*/}"
  cp -- "$f" "$D/$n" && chown -h "$UID_:$GID_" "$D/$n" && chmod 0400 "$D/$n" || exit 1
done
chown -h "$UID_:$GID_" "$D" && chmod 0500 "$D" || exit 1
exit 0
`
}

// secretsSteps is the secrets step when clawkerd reports staged secrets
// (HelloAck.staged). Only then: a plan without secrets stays as it was,
// and the clawkerd the CLI copies in always reports its staging.
func secretsSteps(t InitTarget) []step {
	for _, p := range t.Staged.GetPaths() {
		if p == consts.StagedSecrets {
			return []step{secretsStep()}
		}
	}
	return nil
}
