package policy

// defaultGroups is what a coding agent needs out of the box: package
// registries, model APIs and git hosts. Distribution mirrors keep port
// 80 because apt and apk fetch signed indexes over plain HTTP.
var defaultGroups = []struct {
	name  string
	ports []int
	hosts []string
}{
	{"npm", []int{443}, []string{"registry.npmjs.org", "registry.yarnpkg.com"}},
	{"pypi", []int{443}, []string{"pypi.org", "files.pythonhosted.org"}},
	{"go", []int{443}, []string{"proxy.golang.org", "sum.golang.org"}},
	{"crates", []int{443}, []string{"crates.io", "index.crates.io", "static.crates.io"}},
	{"rubygems", []int{443}, []string{"rubygems.org", "index.rubygems.org"}},
	{"maven", []int{443}, []string{"repo.maven.apache.org", "repo1.maven.org"}},
	{"debian", []int{80, 443}, []string{"deb.debian.org", "security.debian.org"}},
	{"ubuntu", []int{80, 443}, []string{"archive.ubuntu.com", "security.ubuntu.com", "ports.ubuntu.com"}},
	{"alpine", []int{80, 443}, []string{"dl-cdn.alpinelinux.org"}},
	// Claude Code talks to the API, Statsig (feature flags) and Sentry.
	{"anthropic", []int{443}, []string{"api.anthropic.com", "statsig.anthropic.com", "sentry.io"}},
	{"openai", []int{443}, []string{"api.openai.com"}},
	{"git", []int{443, 22}, []string{"github.com", "gitlab.com", "bitbucket.org"}},
	{"git", []int{443}, []string{"api.github.com", "codeload.github.com", "*.githubusercontent.com"}},
}

// Defaults returns the built-in allow rules, named "default:<group>".
// `defaults: false` in clawker.yaml turns them off.
func Defaults() []Rule {
	var out []Rule
	for _, g := range defaultGroups {
		for _, h := range g.hosts {
			out = append(out, Rule{Name: "default:" + g.name, Host: h, Ports: append([]int(nil), g.ports...)})
		}
	}
	return out
}
