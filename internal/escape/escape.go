// Package escape makes text from a repository safe to print on a terminal.
//
// Commit subjects, ref names, pusher names and failure reasons come from
// whoever pushed; printed as they are, an escape sequence in them could
// recolour, rewrite or hide what the operator reads, or set the terminal's
// title. Controls writes every C0 and C1 control character (tab excepted),
// DEL and every byte that is not UTF-8 as a Go escape (\x1b, \n, \u009b), so
// what reaches the terminal is printable and still says what was there.
// Build and hook output is not passed through it: it is the app's own, and
// its colours are useful.
package escape

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Controls returns s with its control characters escaped; s without any
// comes back unchanged.
func Controls(s string) string {
	if !needs(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case isControl(r):
			b.WriteString(named(r))
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needs(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || isControl(r) {
			return true
		}
		i += size
	}
	return false
}

// isControl is true for C0 controls but tab, DEL and C1 controls.
func isControl(r rune) bool {
	return (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f)
}

func named(r rune) string {
	switch r {
	case '\a':
		return `\a`
	case '\b':
		return `\b`
	case '\f':
		return `\f`
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\v':
		return `\v`
	}
	if r < 0x80 {
		return fmt.Sprintf(`\x%02x`, r)
	}
	return fmt.Sprintf(`\u%04x`, r)
}
