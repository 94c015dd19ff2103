package main

import (
	"os/exec"
	"testing"
)

// TestTTYSessionDrivesAFakeShell runs a stand-in for a shell on the pty:
// it prints a banner, a prompt, a cursor query and a prompt redraw, as
// busybox ash does, then echoes 3 bytes back one at a time (dd) and
// exits. The session must find the prompt through the control sequences,
// time a keystroke by its echo, and see the process out.
func TestTTYSessionDrivesAFakeShell(t *testing.T) {
	s, err := startTTY(exec.Command("sh", "-c", `printf 'banner\r\n/ # \033[6n\r/ # \033[J'; exec dd bs=1 count=3 status=none`))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := s.firstByte(); err != nil || d <= 0 {
		t.Fatalf("first byte: %v %v", d, err)
	}
	p, err := s.prompt()
	if err != nil {
		t.Fatal(err)
	}
	if string(p) != "/ # " {
		t.Fatalf("prompt %q, want %q", p, "/ # ")
	}
	if d, err := s.keystroke('#'); err != nil || d <= 0 {
		t.Fatalf("keystroke: %v %v", d, err)
	}
	// '#' + "xy" = 3: dd exits.
	if err := s.end("xy"); err != nil {
		t.Fatalf("end: %v", err)
	}
}

func TestVisibleDropsControlSequences(t *testing.T) {
	got := string(visible([]byte("a\x1b[6nb\x1b[1;5Rc\x1b[Jd\x1b[")))
	if got != "abcd" {
		t.Errorf("visible = %q, want %q", got, "abcd")
	}
}
