package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/clawker/clawker/internal/auth"
)

// LoadOrCreateSigningKey returns the access-token signing key kept at
// path, creating it (0600) when absent. The key outlives the process so a
// token issued just before a CP crash still verifies at the next CP: the
// agent has spent its single-use assertion on it and has no other way to
// Register. replaced reports that an unreadable key was overwritten.
func LoadOrCreateSigningKey(path string) (key *ecdsa.PrivateKey, replaced bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if k, perr := auth.ParseECKeyPEM(b); perr == nil && k.Curve == elliptic.P256() {
			return k, false, nil
		}
		// Written by rename, so only a foreign hand corrupts it: a fresh
		// key costs only the tokens in flight, as a restart used to.
		replaced = true
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read token signing key: %w", err)
	}
	if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, false, fmt.Errorf("generate token signing key: %w", err)
	}
	pemBytes, err := auth.KeyPEM(key)
	if err != nil {
		return nil, false, err
	}
	if err := auth.WriteFileAtomic(path, pemBytes, 0o600); err != nil {
		return nil, false, fmt.Errorf("write token signing key: %w", err)
	}
	return key, replaced, nil
}
