package agent

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
)

// Step names: the wire vocabulary subscribers match InitStep* events on.
const (
	StepConfig     = "config"
	StepGit        = "git"
	StepSSH        = "ssh"
	StepPostInit   = "post-init"
	StepPreRun     = "pre-run"
	StepAgentReady = "agent-ready"
)

// Staging contract with the CLI: it copies these into the container's
// writable layer before start; the plan only reads them. Every input is
// optional — an absent one makes its step a successful no-op.
const (
	StagingHome        = consts.StagingDir + "/" + inputHome
	StagingGitIdentity = consts.StagingDir + "/" + inputGitIdentity // line 1 name, line 2 email
	StagingKnownHosts  = consts.StagingDir + "/" + inputKnownHosts
	StagingHookPost    = consts.StagingDir + "/" + inputHookPost
	StagingHookPreRun  = consts.StagingDir + "/" + inputHookPreRun
)

// Step timeouts. The built-in steps touch a few small files; hooks are
// project code (package installs and the like) and get far longer.
const (
	builtinStepTimeout = 60 * time.Second
	hookStepTimeout    = 30 * time.Minute
	probeTimeout       = 15 * time.Second
)

type stepKind int

const (
	kindShell stepKind = iota
	kindAgentReady
)

// step is one plan entry. Shell steps run `/bin/sh -c script` with the
// resolved user's identity spliced in as shell variables.
type step struct {
	name string
	kind stepKind
	// script builds the shell text for the resolved user.
	script func(u userInfo) string
	// asUser runs the stage with the user's uid/gid instead of root. Every
	// step that touches the user's home does: as root, a symlink the agent
	// planted anywhere under it (~/.ssh -> /etc) would redirect the write.
	asUser bool
	// exitOnNonZero makes clawkerd end the container with the step's
	// exit code: a failing project hook must stop the agent, not leave
	// it half set up.
	exitOnNonZero bool
	timeout       time.Duration
	// markInitialized sends AgentInitialized after the step succeeds.
	markInitialized bool
	// input is the staged path (relative to consts.StagingDir) whose
	// absence makes the script exit 0 having done nothing; "" = none.
	input string
	// once marks a one-time step: with init-once/v1 it carries its name
	// as once_key, and clawkerd runs it at most once to success.
	once bool
}

// Staged inputs relative to consts.StagingDir, as HelloAck.staged lists
// them: short names for consts.Staged*, which the CLI stages by, so the
// writer and the reader cannot drift.
const (
	inputHome        = consts.StagedHome
	inputGitIdentity = consts.StagedGitIdentity
	inputKnownHosts  = consts.StagedKnownHosts
	inputHookPost    = consts.StagedHookPostInit
	inputHookPreRun  = consts.StagedHookPreRun
)

// userInfo is CLAWKER_USER as resolved inside the container (reported in
// HelloAck.user, or by the probe from an older clawkerd).
type userInfo struct {
	uid, gid uint32
	home     string
}

var rootUser = userInfo{home: "/root"}

// buildPlan returns the steps for one Session. One-time init steps run
// unless clawkerd reports the init marker; boot steps run on every start;
// agent-ready is skipped when the user CMD already runs (a CP reconnect).
func buildPlan(t InitTarget) []step {
	var plan []step
	if !t.Initialized {
		plan = append(plan,
			step{name: StepConfig, once: true, script: configScript, asUser: true, timeout: builtinStepTimeout, input: inputHome},
			step{name: StepGit, once: true, script: gitScript, asUser: true, timeout: builtinStepTimeout, input: inputGitIdentity},
			step{name: StepSSH, once: true, script: sshScript, asUser: true, timeout: builtinStepTimeout, input: inputKnownHosts},
			step{name: StepPostInit, once: true, script: hookScript(StagingHookPost), asUser: true,
				exitOnNonZero: true, timeout: hookStepTimeout, markInitialized: true, input: inputHookPost},
		)
	}
	// Boot steps belong to a container start: when the user CMD already
	// runs (a CP restart or reconnect), pre-run must not fire its hook again.
	if !t.CmdRunning {
		plan = append(plan, secretsSteps(t)...)
		plan = append(plan,
			step{name: StepPreRun, script: hookScript(StagingHookPreRun), asUser: true,
				exitOnNonZero: true, timeout: hookStepTimeout, input: inputHookPreRun},
			step{name: StepAgentReady, kind: kindAgentReady})
	}
	return plan
}

// stagedSet is HelloAck.staged as a set; nil means not reported, so
// every input must be assumed present.
func stagedSet(st *clawkerdv1.StagedInputs) map[string]bool {
	if st == nil {
		return nil
	}
	m := make(map[string]bool, len(st.GetPaths()))
	for _, p := range st.GetPaths() {
		m[p] = true
	}
	return m
}

// inputAbsent reports whether st's script would find its input missing
// and exit 0 without effect, so running it can be skipped.
func (st step) inputAbsent(staged map[string]bool) bool {
	return staged != nil && st.input != "" && !staged[st.input]
}

// shQuote quotes s for POSIX sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func prelude(u userInfo) string {
	return fmt.Sprintf("UID_=%d; GID_=%d; UHOME=%s; export HOME=\"$UHOME\"\n", u.uid, u.gid, shQuote(u.home))
}

// homeWritable ends a built-in step with success when the user cannot
// write their home (a numeric user whose home is /): the step runs as the
// user, so there is nothing it could do there.
const homeWritable = `if [ ! -d "$UHOME" ] || [ ! -w "$UHOME" ]; then
  echo "clawker: $UHOME is not a directory the user can write; step skipped" >&2; exit 0
fi
`

// probeScript resolves CLAWKER_USER (a name, or uid[:gid]) against
// /etc/passwd using only shell builtins, and prints "uid:gid:home".
// Unknown names fall back to root, the spec default.
const probeScript = `U="${CLAWKER_USER:-root}"
want=""
case "$U" in ''|*[!0-9:]*) ;; *) want="${U%%:*}" ;; esac
R_UID=0; R_GID=0; R_HOME=/root; found=""
if [ -r /etc/passwd ]; then
  while IFS=: read -r n _ uid gid _ home _; do
    if [ "$n" = "$U" ] || { [ -n "$want" ] && [ "$uid" = "$want" ]; }; then
      R_UID=$uid; R_GID=$gid; R_HOME=$home; found=1; break
    fi
  done < /etc/passwd
fi
if [ -z "$found" ] && [ -n "$want" ]; then R_UID=$want; R_GID=$want; R_HOME=/; fi
case "$U" in *:*) [ -n "$want" ] && R_GID="${U#*:}" ;; esac
[ -n "$R_HOME" ] || R_HOME=/
printf '%s:%s:%s\n' "$R_UID" "$R_GID" "$R_HOME"
`

// parseProbe reads the probe's "uid:gid:home" line.
func parseProbe(out string) (userInfo, error) {
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	parts := strings.SplitN(line, ":", 3)
	if len(parts) != 3 {
		return rootUser, fmt.Errorf("probe output %q: want uid:gid:home", line)
	}
	uid, err := strconv.ParseUint(parts[0], 10, 32)
	if err != nil {
		return rootUser, fmt.Errorf("probe uid %q: %w", parts[0], err)
	}
	gid, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return rootUser, fmt.Errorf("probe gid %q: %w", parts[1], err)
	}
	if parts[2] == "" {
		parts[2] = "/"
	}
	return userInfo{uid: uint32(uid), gid: uint32(gid), home: parts[2]}, nil
}

// configScript copies staged home files into the user's home when absent
// there, never overwriting. It runs as the user, so the copies are theirs.
func configScript(u userInfo) string {
	return prelude(u) + `S=` + StagingHome + `
[ -d "$S" ] || exit 0
for t in cp mkdir; do command -v "$t" >/dev/null 2>&1 || exit 0; done
` + homeWritable + `copy_tree() {
  for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    d="$2/${f##*/}"
    if [ -d "$f" ] && [ ! -L "$f" ]; then
      if [ ! -d "$d" ]; then mkdir -p "$d" || return 1; fi
      copy_tree "$f" "$d" || return 1
    elif [ ! -e "$d" ] && [ ! -L "$d" ]; then
      cp -P "$f" "$d" || return 1
    fi
  done
}
copy_tree "$S" "$UHOME"
`
}

// gitScript sets the staged git identity when git exists and the user
// has none configured.
func gitScript(u userInfo) string {
	return prelude(u) + `F=` + StagingGitIdentity + `
[ -r "$F" ] || exit 0
command -v git >/dev/null 2>&1 || exit 0
` + homeWritable + `name=""; email=""
{ IFS= read -r name; IFS= read -r email; } < "$F" || true
if [ -n "$name" ] && [ -z "$(git config --global user.name 2>/dev/null)" ]; then
  git config --global user.name "$name" || exit 1
fi
if [ -n "$email" ] && [ -z "$(git config --global user.email 2>/dev/null)" ]; then
  git config --global user.email "$email" || exit 1
fi
exit 0
`
}

// sshScript appends staged known_hosts lines missing from the user's
// ~/.ssh/known_hosts (line-exact match, builtins only), as the user.
func sshScript(u userInfo) string {
	return prelude(u) + `F=` + StagingKnownHosts + `
[ -r "$F" ] || exit 0
command -v mkdir >/dev/null 2>&1 || exit 0
` + homeWritable + `D="$UHOME/.ssh"; K="$D/known_hosts"
if [ ! -d "$D" ]; then mkdir -p "$D" || exit 1; chmod 700 "$D" 2>/dev/null; fi
[ -e "$K" ] || { : > "$K" || exit 1; }
has_line() {
  while IFS= read -r l || [ -n "$l" ]; do [ "$l" = "$1" ] && return 0; done < "$K"
  return 1
}
if [ -s "$K" ] && command -v tail >/dev/null 2>&1 && [ -n "$(tail -c 1 "$K")" ]; then echo >> "$K"; fi
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] || continue
  has_line "$line" || printf '%s\n' "$line" >> "$K" || exit 1
done < "$F"
chmod 644 "$K" 2>/dev/null
exit 0
`
}

// hookScript runs a staged project hook as the user from their home.
// Absent hook = success; a non-executable one is run through sh.
func hookScript(path string) func(u userInfo) string {
	return func(u userInfo) string {
		return prelude(u) + `H=` + path + `
[ -f "$H" ] || exit 0
cd "$UHOME" 2>/dev/null || cd /
if [ -x "$H" ]; then exec "$H"; fi
exec /bin/sh "$H"
`
	}
}
