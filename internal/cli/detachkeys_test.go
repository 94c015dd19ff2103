package cli

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestParseDetachKeys(t *testing.T) {
	for in, want := range map[string][]byte{
		"ctrl-p,ctrl-q": {16, 17}, "ctrl-a": {1}, "a,ctrl-@,ctrl-[,ctrl-_": {'a', 0, 27, 31}, "": nil, "CTRL-Z": {26},
	} {
		got, err := parseDetachKeys(in)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("parseDetachKeys(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"ctrl-", "ctrl-1", "ab", "ctrl-p,,"} {
		if _, err := parseDetachKeys(bad); err == nil {
			t.Errorf("parseDetachKeys(%q): want an error", bad)
		}
	}
}

// readAll drains a detachReader, returning what passed and the final error.
func readAll(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func TestDetachReader(t *testing.T) {
	keys := []byte{16, 17} // ctrl-p ctrl-q
	cases := []struct {
		in       string
		want     string
		detached bool
	}{
		{"hello", "hello", false},
		{"ab\x10\x11cd", "ab", true},               // input after the sequence is dropped
		{"a\x10b\x10\x10\x11", "a\x10b\x10", true}, // a partial match is passed on
		{"vi\x10", "vi\x10", false},                // a held prefix is flushed at EOF
		{"\x11\x10x\x10\x11", "\x11\x10x", true},   // out-of-order keys pass
	}
	for _, tc := range cases {
		for _, oneByte := range []bool{false, true} {
			var src io.Reader = bytes.NewReader([]byte(tc.in))
			if oneByte {
				src = iotest.OneByteReader(src) // the sequence split across reads
			}
			got, err := readAll(&detachReader{r: src, keys: keys})
			if string(got) != tc.want || errors.Is(err, errDetached) != tc.detached {
				t.Errorf("%q (one byte %v): got %q, %v; want %q, detached %v", tc.in, oneByte, got, err, tc.want, tc.detached)
			}
		}
	}
}
