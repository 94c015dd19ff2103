package cli

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// An interactive read goes out alone and at once: next does not wait for
// more input when none is queued.
func TestStdinBatcherSendsASingleReadAtOnce(t *testing.T) {
	reads := make(chan stdinRead, 1)
	reads <- stdinRead{data: []byte("ls\n")}
	b := &stdinBatcher{reads: reads}
	data, err, ok := b.next()
	if !ok || err != nil || string(data) != "ls\n" {
		t.Fatalf("next = %q, %v, %v", data, err, ok)
	}
}

// Reads queued behind a slow Send are joined into messages of at most
// stdinMessageMax, in order, and the input's end arrives with its data.
func TestStdinBatcherJoinsQueuedReads(t *testing.T) {
	const n = 11
	reads := make(chan stdinRead, n)
	var want []byte
	for i := range n {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, stdinReadSize-i) // uneven sizes
		want = append(want, chunk...)
		r := stdinRead{data: chunk}
		if i == n-1 {
			r.err = io.EOF
		}
		reads <- r
	}
	close(reads)
	b := &stdinBatcher{reads: reads}
	var got []byte
	msgs := 0
	for {
		data, err, ok := b.next()
		if !ok {
			t.Fatal("reads drained before the input's end")
		}
		if len(data) > stdinMessageMax {
			t.Fatalf("message of %d bytes, max %d", len(data), stdinMessageMax)
		}
		got = append(got, data...)
		msgs++
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("joined %d bytes, want %d in order", len(got), len(want))
	}
	if wantMsgs := (n*stdinReadSize + stdinMessageMax - 1) / stdinMessageMax; msgs > wantMsgs+1 {
		t.Fatalf("%d messages for %d reads, want about %d", msgs, n, wantMsgs)
	}
}

// readStdin forwards every read and its error, then closes.
func TestReadStdinForwardsUntilError(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 3*stdinReadSize+5)
	stop := make(chan struct{})
	defer close(stop)
	var got []byte
	var last error
	for r := range readStdin(bytes.NewReader(payload), stop) {
		got = append(got, r.data...)
		last = r.err
	}
	if !bytes.Equal(got, payload) || !errors.Is(last, io.EOF) {
		t.Fatalf("got %d bytes, last error %v", len(got), last)
	}
}
