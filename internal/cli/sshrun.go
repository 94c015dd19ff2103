package cli

import (
	"context"
	"regexp"
	"slices"
	"strings"

	"github.com/clawker/clawker/internal/consts"
)

// The agent's ssh client config. Agents have no route out, so plain ssh
// (and git over ssh) needs a ProxyCommand through the egress gateway; a
// system drop-in gives every image that without user setup, and ssh takes
// the first value it reads, so ~/.ssh/config (and -o) still override it.
const (
	sshConfigPath = "/etc/ssh/ssh_config"
	sshDropInDir  = "/etc/ssh/ssh_config.d"
	// 99-: other drop-ins of the image, read earlier, win too.
	sshDropInPath = sshDropInDir + "/99-clawker-egress.conf"
)

var sshDropIn = []byte(`# Written by clawker run. This agent reaches the outside only through the
# egress gateway, so ssh (and git over ssh) tunnels through it with CONNECT.
# Your ~/.ssh/config or ssh -o ProxyCommand=... takes precedence. %h is
# quoted: ssh runs this through sh, and a hostname from a repo's
# .gitmodules must not become a command (CVE-2023-51385).
Host *
    ProxyCommand ` + consts.ClawkerdPath + ` proxy-connect '%h' %p
`)

var (
	includeDropIns = regexp.MustCompile(`(?i)^[ \t]*Include[ \t]+("?)/etc/ssh/ssh_config\.d/`)
	hostOrMatch    = regexp.MustCompile(`(?i)^[ \t]*(Host|Match)[ \t=]`)
)

// includesDropIns reports whether an ssh_config reads ssh_config.d for
// every host (the Debian, Ubuntu, Fedora and Alpine packages' does): an
// Include after a Host or Match line applies only to that block's hosts.
func includesDropIns(cfg []byte) bool {
	for _, line := range strings.Split(string(cfg), "\n") {
		switch {
		case includeDropIns.MatchString(line):
			return true
		case hostOrMatch.MatchString(line):
			return false
		}
	}
	return false
}

// sshConfigFiles are the ssh client files for the agent's bundle: the
// drop-in, and the image's ssh_config with the drop-in's block prepended
// when it does not read the dir (at the top, where it applies to every
// host; not an Include, which OpenSSH before 7.3 rejects). An image
// without ssh_config gets none: the package that installs ssh later
// brings one that includes the dir, and a file of ours there would
// collide with it.
func sshConfigFiles(ctx context.Context, c containerFileReader, id string) ([]bundleFile, error) {
	files := []bundleFile{{path: sshDropInPath, mode: 0o644, data: sshDropIn}}
	cfg, err := readContainerFile(ctx, c, id, sshConfigPath)
	if err != nil {
		return nil, err
	}
	if cfg == nil || includesDropIns(cfg) {
		return files, nil
	}
	// The image's lines follow our Host *, which matches every host, so
	// its global options still apply everywhere.
	data := append(append(slices.Clip(sshDropIn), "\n# The image's ssh_config follows.\n"...), cfg...)
	return append(files, bundleFile{path: sshConfigPath, mode: 0o644, data: data}), nil
}
