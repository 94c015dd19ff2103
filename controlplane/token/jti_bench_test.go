package token

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkJTIConsume is the sqlite cost of burning one fresh jti (the
// per-token-request write) on a database file in a temp dir.
func BenchmarkJTIConsume(b *testing.B) {
	s, err := NewSQLiteJTIStore(filepath.Join(b.TempDir(), "cp.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fresh, _, err := s.Consume(ctx, fmt.Sprintf("jti-%d", i), "holder", exp)
		if err != nil || !fresh {
			b.Fatalf("consume %d: fresh=%v err=%v", i, fresh, err)
		}
	}
}
