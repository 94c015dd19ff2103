package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// termSafe makes an agent-controlled string harmless to print on the
// operator's terminal: control characters (C0 incl. ESC, DEL, C1), bidi
// and other invisible format characters, and invalid UTF-8 are written as
// Go-style escapes (\x1b, \u202e, \n), so an OSC 52 clipboard write or a
// cursor sequence shows as text. Plain text, spaces and non-ASCII letters
// are kept as they are, unlike strconv.Quote.
func termSafe(s string) string {
	if isTermSafe(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case safeRune(r):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

func isTermSafe(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || !safeRune(r) {
			return false
		}
		i += n
	}
	return true
}

// safeRune: printable (letters, marks, numbers, punctuation, symbols and
// the ASCII space), excluding format characters such as bidi overrides.
func safeRune(r rune) bool {
	return r == ' ' || (unicode.IsPrint(r) && !unicode.Is(unicode.Cf, r))
}

// termSafeTable is a tabwriter whose input cells are escaped: the
// tabs and newlines the CLI writes between cells are kept, so columns stay
// aligned, and a cell cannot smuggle tabwriter's own escape byte (0xff).
// Each Write must hold whole cells (one Fprintf per row does). A Write
// cannot tell a tab or newline inside a cell from a separator: rows whose
// cells are agent-controlled go through Row.
type termSafeTable struct{ *tabwriter.Writer }

// Row writes one row, each cell escaped on its own: a tab or newline
// inside a cell is printed as \t or \n, so it can neither shift the
// columns nor forge a row.
func (t termSafeTable) Row(cells ...string) error {
	esc := make([]string, len(cells))
	for i, c := range cells {
		esc[i] = termSafe(c)
	}
	_, err := io.WriteString(t.Writer, strings.Join(esc, "\t")+"\n")
	return err
}

func (t termSafeTable) Write(p []byte) (int, error) {
	s := string(p)
	if isTermSafe(strings.NewReplacer("\n", "", "\t", "").Replace(s)) {
		return t.Writer.Write(p)
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		cells := strings.Split(l, "\t")
		for j, c := range cells {
			cells[j] = termSafe(c)
		}
		lines[i] = strings.Join(cells, "\t")
	}
	if _, err := io.WriteString(t.Writer, strings.Join(lines, "\n")); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonTermSafe rewrites the characters encoding/json leaves raw but a
// terminal may act on (DEL, C1 controls, bidi and other format
// characters) as \u escapes: the JSON decodes to the same strings.
func jsonTermSafe(b []byte) []byte {
	s := string(b)
	if isTermSafe(strings.NewReplacer("\n", "", "\t", "").Replace(s)) {
		return b
	}
	var out strings.Builder
	for _, r := range s {
		if r == '\n' || r == '\t' || safeRune(r) {
			out.WriteRune(r)
			continue
		}
		if r > 0xffff { // no such control, but keep the JSON valid
			out.WriteRune(r)
			continue
		}
		fmt.Fprintf(&out, `\u%04x`, r)
	}
	return []byte(out.String())
}

// termSafeLines is termSafe keeping the newlines of a multi-line message.
func termSafeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = termSafe(l)
	}
	return strings.Join(lines, "\n")
}
