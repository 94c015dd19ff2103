package admin

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// Profile bounds. A window longer than two minutes is a mistake more often
// than a need, and it pins the one sampling slot for everyone else.
const (
	maxProfileSeconds = 120
	profileChunkSize  = 64 << 10
	// mutexFraction and blockRateNanos are the sampling rates turned on for
	// a mutex/block window (off otherwise: both cost on every contended
	// lock or blocking operation).
	mutexFraction  = 5
	blockRateNanos = 10_000
)

// profiler serialises the windowed profiles: runtime/pprof allows one CPU
// profile per process, and the mutex/block rates are process-wide, so one
// window of any of the three runs at a time.
type profiler struct {
	mu   sync.Mutex
	busy bool
}

func (p *profiler) acquire() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy {
		return false
	}
	p.busy = true
	return true
}

func (p *profiler) release() {
	p.mu.Lock()
	p.busy = false
	p.mu.Unlock()
}

// Profile records a runtime/pprof profile of this process and streams it
// in chunks. The admin listener's TLS and interceptors restrict it to the
// operator's CLI cert like every other admin RPC; there is deliberately no
// net/http/pprof handler on a listener agents can reach. A panic is the
// admin listener's recover interceptor's to catch, as for every RPC.
func (s *Server) Profile(req *adminv1.ProfileRequest, stream adminv1.AdminService_ProfileServer) error {
	ctx := stream.Context()
	kind, seconds := req.GetKind(), req.GetSeconds()
	if err := checkProfileRequest(kind, seconds); err != nil {
		return err
	}
	s.log.Info().Str("event", "admin_profile").Str("kind", profileName(kind)).Uint32("seconds", seconds).
		Str("by", callerCN(ctx)).Msg("profile requested")
	var buf bytes.Buffer
	var err error
	if windowed(kind) {
		if !s.prof.acquire() {
			return status.Error(codes.ResourceExhausted, "another cpu, mutex or block profile is running: try again when it ends")
		}
		defer s.prof.release()
		err = recordWindow(ctx, kind, time.Duration(seconds)*time.Second, &buf)
	} else {
		err = writeNamed(kind, &buf)
	}
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		s.log.Warn().Str("event", "admin_profile_failed").Str("kind", profileName(kind)).Err(err).Msg("profile failed")
		return status.Errorf(codes.Internal, "profile %s: %v", profileName(kind), err)
	}
	for data := buf.Bytes(); len(data) > 0; {
		n := min(len(data), profileChunkSize)
		if err := stream.Send(&adminv1.ProfileChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	s.log.Info().Str("event", "admin_profile_done").Str("kind", profileName(kind)).Int("bytes", buf.Len()).Msg("profile sent")
	return nil
}

func checkProfileRequest(kind adminv1.ProfileKind, seconds uint32) error {
	switch {
	case profileName(kind) == "":
		return status.Error(codes.InvalidArgument, "profile kind: want cpu, heap, goroutine, allocs, mutex or block")
	case windowed(kind) && (seconds < 1 || seconds > maxProfileSeconds):
		return status.Errorf(codes.InvalidArgument, "a %s profile samples for 1 to %d seconds, not %d", profileName(kind), maxProfileSeconds, seconds)
	case !windowed(kind) && seconds != 0:
		return status.Errorf(codes.InvalidArgument, "a %s profile is taken at once: seconds must be 0", profileName(kind))
	}
	return nil
}

// profileName is the runtime/pprof name of kind, or "" when unknown.
func profileName(kind adminv1.ProfileKind) string {
	switch kind {
	case adminv1.ProfileKind_PROFILE_KIND_CPU:
		return "cpu"
	case adminv1.ProfileKind_PROFILE_KIND_HEAP:
		return "heap"
	case adminv1.ProfileKind_PROFILE_KIND_GOROUTINE:
		return "goroutine"
	case adminv1.ProfileKind_PROFILE_KIND_ALLOCS:
		return "allocs"
	case adminv1.ProfileKind_PROFILE_KIND_MUTEX:
		return "mutex"
	case adminv1.ProfileKind_PROFILE_KIND_BLOCK:
		return "block"
	}
	return ""
}

// windowed says whether kind samples over a time window (and takes the
// one sampling slot) rather than reading the runtime's state at once.
func windowed(kind adminv1.ProfileKind) bool {
	switch kind {
	case adminv1.ProfileKind_PROFILE_KIND_CPU, adminv1.ProfileKind_PROFILE_KIND_MUTEX, adminv1.ProfileKind_PROFILE_KIND_BLOCK:
		return true
	}
	return false
}

// writeNamed writes a point-in-time profile, gzipped protobuf (debug=0).
func writeNamed(kind adminv1.ProfileKind, buf *bytes.Buffer) error {
	if kind == adminv1.ProfileKind_PROFILE_KIND_HEAP {
		// As net/http/pprof's ?gc=1: the profile shows the live heap, and a
		// metrics scrape right after it reads heap_alloc without garbage.
		runtime.GC()
	}
	p := pprof.Lookup(profileName(kind))
	if p == nil {
		return fmt.Errorf("no runtime profile %q", profileName(kind))
	}
	return p.WriteTo(buf, 0)
}

// recordWindow samples for d, ending early (with ctx's error) when the
// caller goes away. Mutex and block sampling is switched on for the window
// only; their profiles are cumulative, so they also hold earlier windows'
// samples.
func recordWindow(ctx context.Context, kind adminv1.ProfileKind, d time.Duration, buf *bytes.Buffer) error {
	switch kind {
	case adminv1.ProfileKind_PROFILE_KIND_CPU:
		if err := pprof.StartCPUProfile(buf); err != nil {
			// Someone in-process (a test, a debugger hook) holds it.
			return fmt.Errorf("cpu profiler busy: %w", err)
		}
		err := wait(ctx, d)
		pprof.StopCPUProfile() // flushes into buf before returning
		return err
	case adminv1.ProfileKind_PROFILE_KIND_MUTEX:
		prev := runtime.SetMutexProfileFraction(mutexFraction)
		err := wait(ctx, d)
		runtime.SetMutexProfileFraction(prev)
		if err != nil {
			return err
		}
	case adminv1.ProfileKind_PROFILE_KIND_BLOCK:
		runtime.SetBlockProfileRate(blockRateNanos)
		err := wait(ctx, d)
		runtime.SetBlockProfileRate(0) // there is no getter; the CP never enables it otherwise
		if err != nil {
			return err
		}
	}
	return writeNamed(kind, buf)
}

func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
