package egressca

import "bytes"

// SystemBundles are the system trust bundles of common base images
// (Debian and Alpine, Fedora, and the OpenSSL default). The CA is appended
// to each an agent's image has, so OpenSSL, Go and Python trust it.
var SystemBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"}

// Append returns bundle with certPEM after it, on a line of its own; ok
// is false when bundle already holds it (a second run adds nothing).
func Append(bundle, certPEM []byte) (_ []byte, ok bool) {
	if bytes.Contains(bundle, certPEM) {
		return bundle, false
	}
	out := make([]byte, 0, len(bundle)+1+len(certPEM))
	out = append(out, bundle...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(out, certPEM...), true
}
