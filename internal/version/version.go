// Package version holds the build's version string. It is its own package
// so that clawker-cp reports the version without importing the CLI (and
// cobra); the build stamps it with
// -ldflags "-X github.com/clawker/clawker/internal/version.Version=...".
package version

// Version is "dev" unless the build stamps it.
var Version = "dev"
