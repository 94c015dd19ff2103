package clawkerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// onceKeyRe bounds ShellCommand.once_key: it becomes a file name.
var onceKeyRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// onceSteps records completed one-time init steps (ShellCommand.once_key)
// as fsync'd files in a directory beside the init marker, so a step that
// succeeded is never run again by a CP that died before it saw the Done.
type onceSteps struct {
	dir string

	mu       sync.Mutex
	inflight map[string]chan struct{} // closed when that key's run ended
}

func newOnceSteps(initMarker string) *onceSteps {
	return &onceSteps{dir: initMarker + ".once", inflight: map[string]chan struct{}{}}
}

func (o *onceSteps) path(key string) string { return filepath.Join(o.dir, key) }

func (o *onceSteps) recorded(key string) bool {
	_, err := os.Stat(o.path(key))
	return err == nil
}

// list returns the recorded keys, sorted (HelloAck.completed_once).
func (o *onceSteps) list() []string {
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && onceKeyRe.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// record makes key's completion durable: the file and its directory entry
// are flushed before the caller answers Done.
func (o *onceSteps) record(key string) error {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return fmt.Errorf("once dir: %w", err)
	}
	tmp := o.path("." + key + ".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("once record: %w", err)
	}
	_, werr := f.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("once record: %w", err)
	}
	if err := os.Rename(tmp, o.path(key)); err != nil {
		return fmt.Errorf("once record: %w", err)
	}
	// The entry in the directory, and the directory in its parent.
	return errors.Join(syncDir(o.dir), syncDir(filepath.Dir(o.dir)))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// acquire makes the caller the one runner of key: it waits (until ctx
// ends) while another command with the key runs. recorded means the step
// already succeeded and must not run; otherwise release must be called
// when the run has ended (recorded or not).
func (o *onceSteps) acquire(ctx context.Context, key string) (recorded bool, release func(), err error) {
	for {
		o.mu.Lock()
		if o.recorded(key) {
			o.mu.Unlock()
			return true, nil, nil
		}
		wait, busy := o.inflight[key]
		if !busy {
			ch := make(chan struct{})
			o.inflight[key] = ch
			o.mu.Unlock()
			return false, func() {
				o.mu.Lock()
				delete(o.inflight, key)
				o.mu.Unlock()
				close(ch)
			}, nil
		}
		o.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false, nil, ctx.Err()
		}
	}
}

// runOnce runs a keyed one-time step: at most one run per key at a time,
// none once recorded. The command runs under the server's context, not
// the Session's: a CP that dies mid-step must not leave it half done
// (SIGKILLed) and unrecorded, to be run again on reconnect.
func (s *session) runOnce(c *shellCmd, key string) {
	recorded, release, err := s.srv.once.acquire(s.srv.ctx, key)
	switch {
	case err != nil:
		s.releaseShell(c)
		s.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, "clawkerd shutting down")
		return
	case recorded:
		s.log.Info().Str("event", "once_step_skipped").Str("command_id", c.id).Str("once_key", key).
			Msg("one-time step already recorded; not run again")
		s.releaseShell(c)
		s.sendDone(c.id, 0)
		return
	}
	defer release()
	c.record = func() error { return s.srv.once.record(key) }
	c.run(s.srv.ctx)
}

// validOnceKey checks a ShellCommand's once_key ("" is valid: none).
func validOnceKey(k string) error {
	if k != "" && !onceKeyRe.MatchString(k) {
		return fmt.Errorf("invalid once_key %q", k)
	}
	return nil
}

// recordFailed records a one-time step's success; true (logged) when it
// could not be made durable, so the step is reported failed, not done.
func (c *shellCmd) recordFailed() bool {
	if err := c.record(); err != nil {
		c.sess.log.Error().Str("event", "once_record_failed").Str("command_id", c.id).Err(err).
			Msg("one-time step succeeded but its completion was not recorded")
		return true
	}
	return false
}
