// Package logger is the zerolog setup shared by the three programs. Every
// degraded path logs a structured event= field; this package only builds
// loggers and owns no global state.
package logger

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Logger wraps zerolog so call sites share one type and a nil-safe Nop.
type Logger struct {
	zerolog.Logger
}

// New returns a JSON logger writing to w at the given level ("debug",
// "info", ...; unknown values mean info), stamped with the component name.
func New(w io.Writer, level, component string) *Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	zl := zerolog.New(w).Level(lvl).Hook(timeHook{}).With().Str("component", component).Logger()
	return &Logger{Logger: zl}
}

// TimeFormat is the "time" field's layout: RFC 3339 with fixed-width
// nanoseconds, so latency is measurable from the logs (zerolog's default
// is whole seconds) and lines sort lexically. time.RFC3339Nano parses it.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// timeHook stamps each event with the time it is written. A hook of our
// own rather than zerolog.TimeFieldFormat, which is package-global state
// shared with every other zerolog user in the process.
type timeHook struct{}

func (timeHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str("time", time.Now().Format(TimeFormat))
}

// Stderr is New on os.Stderr.
func Stderr(level, component string) *Logger { return New(os.Stderr, level, component) }

// Nop discards everything.
func Nop() *Logger { return &Logger{Logger: zerolog.Nop()} }

// OrNop returns l, or Nop when l is nil, so constructors can default a nil logger.
func OrNop(l *Logger) *Logger {
	if l == nil {
		return Nop()
	}
	return l
}

// With returns a child logger with one extra string field.
func (l *Logger) With(key, value string) *Logger {
	return &Logger{Logger: l.Logger.With().Str(key, value).Logger()}
}
