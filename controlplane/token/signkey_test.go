package token

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/clawker/clawker/internal/logger"
)

// TestTokenVerifiesAfterRestart: a token issued by one CP process verifies
// at the next when both load the key file. An agent whose CP died between
// the token exchange and Register has spent its assertion and retries
// Register with that token; an in-memory key left it unregistered for good.
func TestTokenVerifiesAfterRestart(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "token-signing.key")
	key, replaced, err := LoadOrCreateSigningKey(keyPath)
	if err != nil || replaced {
		t.Fatalf("create: replaced=%v err=%v", replaced, err)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	f := newTokenFixture(t, nil)
	newIssuer := func() *Issuer {
		iss, err := NewIssuer(Config{AssertionKey: &f.cliKey.PublicKey, JTI: f.jti, PeerLookup: staticLookup{rc: resolvedFor(t, 1)},
			SigningKey: key, Clock: f.clock, Log: logger.New(f.logs, "debug", "test")})
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	f.iss = newIssuer()
	w := f.post(postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 1))})
	if w.Code != 200 {
		t.Fatalf("exchange: %d %s", w.Code, w.Body)
	}
	var resp tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}

	// The restart: the key comes back from the file.
	if key, replaced, err = LoadOrCreateSigningKey(keyPath); err != nil || replaced {
		t.Fatalf("reload: replaced=%v err=%v", replaced, err)
	}
	if _, err := newIssuer().Verifier().Verify(resp.AccessToken, f.leaf.Cert); err != nil {
		t.Fatalf("token from the previous process: %v", err)
	}
	// Without the file (the old behaviour) the token is void.
	fresh, err := NewIssuer(Config{AssertionKey: &f.cliKey.PublicKey, JTI: f.jti, PeerLookup: staticLookup{rc: resolvedFor(t, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Verifier().Verify(resp.AccessToken, f.leaf.Cert); err == nil {
		t.Fatal("a token verified under an unrelated key")
	}
}

// TestSigningKeyUnreadableReplaced: garbage in the key file is replaced by
// a fresh key (tokens in flight are void, as on any restart before) rather
// than leaving the token endpoint down.
func TestSigningKeyUnreadableReplaced(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "token-signing.key")
	if err := os.WriteFile(keyPath, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, replaced, err := LoadOrCreateSigningKey(keyPath)
	if err != nil || !replaced || key == nil {
		t.Fatalf("replaced=%v err=%v", replaced, err)
	}
	again, replaced, err := LoadOrCreateSigningKey(keyPath)
	if err != nil || replaced || !again.Equal(key) {
		t.Fatalf("the replacement was not persisted: replaced=%v err=%v", replaced, err)
	}
}
