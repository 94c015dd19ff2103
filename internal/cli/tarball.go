package cli

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"time"
)

// tarBuilder assembles an in-memory tar with explicit modes and root
// ownership, so what lands in a container never depends on the host's
// umask or file owners.
type tarBuilder struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool
	now  time.Time
}

func newTarBuilder(now time.Time) *tarBuilder {
	b := &tarBuilder{dirs: map[string]bool{}, now: now}
	b.tw = tar.NewWriter(&b.buf)
	return b
}

// dir adds a directory (and its parents at 0755 if not yet added).
func (b *tarBuilder) dir(name string, mode int64) error {
	if b.dirs[name] {
		return nil
	}
	if parent := path.Dir(name); parent != "." && parent != "/" {
		if err := b.dir(parent, 0o755); err != nil {
			return err
		}
	}
	b.dirs[name] = true
	return b.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: b.now})
}

// file adds a regular file with data; its parent dir must use dir first
// when it needs a mode other than 0755.
func (b *tarBuilder) file(name string, mode int64, data []byte) error {
	if parent := path.Dir(name); parent != "." {
		if err := b.dir(parent, 0o755); err != nil {
			return err
		}
	}
	return b.imageFile(name, mode, data)
}

// imageFile adds a regular file into a directory of the image (/etc/ssh,
// the CA bundle's) without entries for its parents: the engine creates
// missing ones and follows an image's symlinked ones (Fedora's
// /etc/ssl/certs), where a directory entry fails the whole copy.
func (b *tarBuilder) imageFile(name string, mode int64, data []byte) error {
	if err := b.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: b.now}); err != nil {
		return err
	}
	_, err := b.tw.Write(data)
	return err
}

// hostFile adds a file read from the host, streamed.
func (b *tarBuilder) hostFile(name string, mode int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	if parent := path.Dir(name); parent != "." {
		if err := b.dir(parent, 0o755); err != nil {
			return err
		}
	}
	if err := b.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: st.Size(), ModTime: b.now}); err != nil {
		return err
	}
	if _, err := io.Copy(b.tw, f); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// bytes closes the archive and returns it.
func (b *tarBuilder) bytes() ([]byte, error) {
	if err := b.tw.Close(); err != nil {
		return nil, err
	}
	return b.buf.Bytes(), nil
}

// timeZero stamps files in images so an import of the same inputs is
// byte-identical.
var timeZero = time.Unix(0, 0).UTC()
