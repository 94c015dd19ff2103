package cli

import (
	"bytes"
	"io"
)

// consoleFilter drops clawkerd's own structured log lines from an agent's
// console stream (they stay in `docker logs` and clawkerd's log file), so
// an attached `clawker run` shows the user command's output and the init
// progress only. Partial lines are held until their newline.
type consoleFilter struct {
	w   io.Writer
	buf []byte
}

var clawkerdLogMarker = []byte(`"component":"clawkerd"`)

func (f *consoleFilter) Write(p []byte) (int, error) {
	f.buf = append(f.buf, p...)
	for {
		i := bytes.IndexByte(f.buf, '\n')
		if i < 0 {
			break
		}
		line := f.buf[:i+1]
		if !(bytes.HasPrefix(line, []byte(`{"level":`)) && bytes.Contains(line, clawkerdLogMarker)) {
			if _, err := f.w.Write(line); err != nil {
				return 0, err
			}
		}
		f.buf = f.buf[i+1:]
	}
	// A very long unterminated line is passed through rather than held.
	if len(f.buf) > 64<<10 {
		if _, err := f.w.Write(f.buf); err != nil {
			return 0, err
		}
		f.buf = f.buf[:0]
	}
	return len(p), nil
}

// Flush writes a trailing partial line.
func (f *consoleFilter) Flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	_, err := f.w.Write(f.buf)
	f.buf = f.buf[:0]
	return err
}
