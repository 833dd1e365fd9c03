// Package escape makes text safe for the places stapling-agent writes it: a terminal line, a
// Nagios status line, a log message. Much of what the agent reports comes from error_log and
// from customers' certificates (responder names, error messages), which a tenant can fill
// with anything; every renderer passes such text through here.
package escape

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line folds s onto one line: runs of white space become one space, other control
// characters (terminal escape sequences start with ESC) and invalid UTF-8 are written as \xNN
// or \u{NNNN}, so nothing in s can move the cursor, recolour a terminal or start a new line.
func Line(s string) string {
	var sb strings.Builder
	space := false
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			space = flush(&sb, space)
			fmt.Fprintf(&sb, `\x%02x`, s[i])
		case r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f':
			space = sb.Len() > 0
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			space = flush(&sb, space)
			if r < 0x100 {
				fmt.Fprintf(&sb, `\x%02x`, r)
			} else {
				fmt.Fprintf(&sb, `\u{%04x}`, r)
			}
		default:
			space = flush(&sb, space)
			sb.WriteRune(r)
		}
		i += n
	}
	return sb.String()
}

func flush(sb *strings.Builder, space bool) bool {
	if space {
		sb.WriteByte(' ')
	}
	return false
}
