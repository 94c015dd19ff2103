// Package binimage lays out an image that holds one static binary: the
// binary and the few /etc files a Go program reads, nothing else.
package binimage

import (
	"archive/tar"
	"bytes"
	"fmt"
)

// File is one regular file of the image.
type File struct {
	Name string // relative, e.g. "etc/passwd"
	Mode int64
	Data []byte
}

// EtcFiles are what a static Go binary reads at run time: a root user
// (os/user, and TLS libraries that ask for a home) and the resolver's
// order (files before DNS, as glibc defaults).
func EtcFiles() []File {
	return []File{
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\n")},
		{"etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")},
	}
}

// Tar is an image layer of bin at /name (0755) plus EtcFiles.
func Tar(name string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range append([]File{{name, 0o755, bin}}, EtcFiles()...) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data))}); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
