package testenv

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FixedNamesLockFile is the lock every suite that uses the fixed Docker
// names (clawker-net, clawker-controlplane) holds while it runs. `go test
// ./...` runs packages in parallel, and two such suites would remove each
// other's control plane.
func FixedNamesLockFile() string { return filepath.Join(os.TempDir(), "clawker-fixed-names.lock") }

// LockFixedNames blocks until this process holds the fixed-names lock and
// returns its release. The lock is an flock on FixedNamesLockFile(), so the
// kernel drops it if the process dies.
func LockFixedNames() (unlock func(), err error) {
	path := FixedNamesLockFile()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
	}, nil
}
