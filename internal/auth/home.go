package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

// Home is the CLI's key material directory ($CLAWKER_HOME).
type Home struct{ Dir string }

// Path returns the path of a file in the home.
func (h Home) Path(name string) string { return filepath.Join(h.Dir, name) }

// DefaultHomeDir is $CLAWKER_HOME, else $XDG_DATA_HOME/clawker, else
// ~/.local/share/clawker.
func DefaultHomeDir() (string, error) {
	if d := os.Getenv(consts.EnvHome); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "clawker"), nil
	}
	hd, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locate home directory (set %s): %w", consts.EnvHome, err)
	}
	return filepath.Join(hd, ".local", "share", "clawker"), nil
}

// InitResult says which files Init created (the rest already existed).
type InitResult struct{ Created []string }

// Init creates the CA, CP cert, CLI cert and assertion signing key, keeping
// whatever already exists. Private files are 0600, the directory 0700. A
// half-present pair (cert without key) is an error rather than silently
// replaced, since replacing a CA invalidates every issued cert.
func (h Home) Init(now time.Time) (InitResult, error) {
	var res InitResult
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return res, fmt.Errorf("create %s: %w", h.Dir, err)
	}
	caExists, err := h.pairExists(consts.CACertFile, consts.CAKeyFile)
	if err != nil {
		return res, err
	}
	var ca *CA
	if caExists {
		if ca, err = LoadCA(h.Path(consts.CACertFile), h.Path(consts.CAKeyFile)); err != nil {
			return res, err
		}
	} else {
		if ca, err = NewCA(now); err != nil {
			return res, err
		}
		if err := h.writePair(consts.CACertFile, consts.CAKeyFile, &Leaf{Cert: ca.Cert, Key: ca.Key}, &res); err != nil {
			return res, err
		}
	}
	mints := []struct {
		cert, key string
		mint      func() (*Leaf, error)
	}{
		{consts.CPCertFile, consts.CPKeyFile, func() (*Leaf, error) { return ca.MintControlPlane(nil, nil, now) }},
		{consts.CLICertFile, consts.CLIKeyFile, func() (*Leaf, error) { return ca.MintCLI(now) }},
	}
	for _, m := range mints {
		ok, err := h.pairExists(m.cert, m.key)
		if err != nil {
			return res, err
		}
		if ok {
			continue
		}
		leaf, err := m.mint()
		if err != nil {
			return res, err
		}
		if err := h.writePair(m.cert, m.key, leaf, &res); err != nil {
			return res, err
		}
	}
	ok, err := h.pairExists(consts.SigningPubFile, consts.SigningKeyFile)
	if err != nil {
		return res, err
	}
	if !ok {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return res, fmt.Errorf("generate signing key: %w", err)
		}
		kp, err := KeyPEM(key)
		if err != nil {
			return res, err
		}
		pp, err := PublicKeyPEM(&key.PublicKey)
		if err != nil {
			return res, err
		}
		if err := h.write(consts.SigningKeyFile, kp, 0o600, &res); err != nil {
			return res, err
		}
		if err := h.write(consts.SigningPubFile, pp, 0o644, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// LoadCA loads the home's CA.
func (h Home) LoadCA() (*CA, error) {
	return LoadCA(h.Path(consts.CACertFile), h.Path(consts.CAKeyFile))
}

// LoadSigningKey loads the assertion signing key.
func (h Home) LoadSigningKey() (*ecdsa.PrivateKey, error) {
	return ReadECKeyFile(h.Path(consts.SigningKeyFile))
}

func (h Home) pairExists(a, b string) (bool, error) {
	ea, err := exists(h.Path(a))
	if err != nil {
		return false, err
	}
	eb, err := exists(h.Path(b))
	if err != nil {
		return false, err
	}
	if ea != eb {
		return false, fmt.Errorf("%s: only one of %s and %s exists; restore or remove it", h.Dir, a, b)
	}
	return ea, nil
}

func (h Home) writePair(certName, keyName string, l *Leaf, res *InitResult) error {
	kp, err := KeyPEM(l.Key)
	if err != nil {
		return err
	}
	if err := h.write(keyName, kp, 0o600, res); err != nil {
		return err
	}
	return h.write(certName, CertPEM(l.Cert), 0o644, res)
}

func (h Home) write(name string, data []byte, mode os.FileMode, res *InitResult) error {
	if err := WriteFileAtomic(h.Path(name), data, mode); err != nil {
		return err
	}
	res.Created = append(res.Created, name)
	return nil
}

// WriteFileAtomic writes data to path via a temp file and rename, with mode.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Synced before the rename: after a power loss the file is the old
	// one or the new one, never empty.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("stat %s: %w", p, err)
}
