package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// defaultDetachKeys is docker's: Ctrl-P then Ctrl-Q.
const defaultDetachKeys = "ctrl-p,ctrl-q"

// errDetached: the operator typed the detach sequence.
var errDetached = errors.New("detached")

// parseDetachKeys reads docker's --detach-keys syntax: a comma-separated
// list of single characters or ctrl-<c> (c one of a-z @ [ \ ] ^ _).
// "" disables detaching.
func parseDetachKeys(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	var out []byte
	for _, k := range strings.Split(s, ",") {
		lk := strings.ToLower(k)
		switch {
		case len(k) == 1:
			out = append(out, k[0])
		case strings.HasPrefix(lk, "ctrl-") && len(lk) == 6:
			c := lk[5]
			switch {
			case c >= 'a' && c <= 'z':
				out = append(out, c-'a'+1)
			case c == '@':
				out = append(out, 0)
			case c >= '[' && c <= '_':
				out = append(out, c-'['+27)
			default:
				return nil, fmt.Errorf("invalid detach key %q", k)
			}
		default:
			return nil, fmt.Errorf("invalid detach key %q (use a character or ctrl-<value>)", k)
		}
	}
	return out, nil
}

// detachReader passes input through until the detach sequence is typed,
// then returns errDetached. A partial match is held back until the next
// byte shows it is not the sequence, then passed on.
type detachReader struct {
	r    io.Reader
	keys []byte
	held int    // bytes of keys matched so far
	out  []byte // ready to return
	err  error  // the underlying reader's, after out is drained
	buf  []byte
}

func (d *detachReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 && d.err == nil {
		if d.buf == nil {
			d.buf = make([]byte, 32<<10)
		}
		n, err := d.r.Read(d.buf)
		for _, b := range d.buf[:n] {
			if d.match(b) {
				d.err = errDetached // what follows the sequence is dropped
				break
			}
		}
		if err != nil && d.err == nil {
			d.out = append(d.out, d.keys[:d.held]...)
			d.held, d.err = 0, err
		}
	}
	if len(d.out) > 0 {
		n := copy(p, d.out)
		d.out = d.out[n:]
		return n, nil
	}
	return 0, d.err
}

// match feeds one byte; true when it completes the sequence.
func (d *detachReader) match(b byte) bool {
	if b == d.keys[d.held] {
		d.held++
		if d.held == len(d.keys) {
			d.held = 0
			return true
		}
		return false
	}
	d.out = append(d.out, d.keys[:d.held]...)
	d.held = 0
	if b == d.keys[0] {
		d.held = 1
		if len(d.keys) == 1 {
			d.held = 0
			return true
		}
		return false
	}
	d.out = append(d.out, b)
	return false
}
