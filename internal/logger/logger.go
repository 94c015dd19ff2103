// Package logger is the zerolog setup shared by the three programs. Every
// degraded path logs a structured event= field; this package only builds
// loggers and owns no global state.
package logger

import (
	"io"
	"os"

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
	zl := zerolog.New(w).Level(lvl).With().Timestamp().Str("component", component).Logger()
	return &Logger{Logger: zl}
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
