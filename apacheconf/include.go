package apacheconf

import (
	"bytes"
	"strings"
)

// The managed block. The markers name the tool and say how to remove the block; its body is
// wrapped in <IfModule ssl_module> as cPanel's own templates wrap SSL directives.
const (
	beginMarker      = "# BEGIN stapling-agent: OCSP stapling turned off (remove with: stapling-agent revert)"
	beginMarkerNL    = "# BEGIN stapling-agent (newline added above): OCSP stapling turned off (remove with: stapling-agent revert)"
	endMarker        = "# END stapling-agent"
	blockBodyOpen    = "<IfModule ssl_module>"
	blockBodyStmt    = "    SSLUseStapling off"
	blockBodyClose   = "</IfModule>"
	directiveName    = "SSLUseStapling"
	blockLineCount   = 5
	blockBeginPrefix = "# BEGIN stapling-agent"
)

// IncludeState is what the include file says about stapling at global scope.
type IncludeState struct {
	// StaplingOff: the last active global SSLUseStapling in the file is "off", whoever wrote it.
	StaplingOff bool
	// Global is that last global value ("on", "off") or "" when the file does not set it.
	Global string
	// ManagedBlock: our block is present, intact.
	ManagedBlock bool
}

// InspectInclude reads include content as Apache would. Only statements outside every
// container other than <IfModule> count; the last one wins, as among global-scope occurrences
// in Apache (FACTS.md section 4).
func InspectInclude(content []byte) IncludeState {
	st := IncludeState{}
	var stack []stmt
	for _, s := range lex(content) {
		switch {
		case s.Open:
			stack = append(stack, s)
		case s.Close:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case strings.EqualFold(s.Name, directiveName) && len(s.Args) == 1 && globalScope(stack):
			st.Global = strings.ToLower(s.Args[0])
		}
	}
	st.StaplingOff = st.Global == "off"
	_, _, st.ManagedBlock = findBlock(content)
	return st
}

func globalScope(stack []stmt) bool {
	for _, c := range stack {
		if !transparent(c) {
			return false
		}
	}
	return true
}

// ApplyBlock returns content with stapling turned off by our managed block, and whether that
// changed anything. Content that already turns stapling off at global scope is returned as is
// (idempotent also against an admin's own line or repeated `echo >>` one-liners). Otherwise
// the block is appended after every existing byte; if our block was present but overridden by a
// later "on", it is moved to the end so that it wins again. A missing final newline is
// completed and the begin marker says so, so RemoveBlock can restore the bytes exactly. Line
// endings follow the file's first line ending (CRLF files stay CRLF).
func ApplyBlock(content []byte) ([]byte, bool) {
	if InspectInclude(content).StaplingOff {
		return content, false
	}
	if stripped, ok := RemoveBlock(content); ok {
		content = stripped
	}
	eol := "\n"
	if i := bytes.IndexByte(content, '\n'); i > 0 && content[i-1] == '\r' {
		eol = "\r\n"
	}
	out := make([]byte, 0, len(content)+256)
	out = append(out, content...)
	begin := beginMarker
	if len(content) > 0 && content[len(content)-1] != '\n' {
		out = append(out, eol...)
		begin = beginMarkerNL
	}
	for _, l := range []string{begin, blockBodyOpen, blockBodyStmt, blockBodyClose, endMarker} {
		out = append(out, l...)
		out = append(out, eol...)
	}
	return out, true
}

// RemoveBlock returns content without our managed block (the last intact one), restoring the
// admin's bytes exactly, and whether a block was found. A block whose body was edited by hand
// is not ours to remove and is left alone.
func RemoveBlock(content []byte) ([]byte, bool) {
	start, end, ok := findBlock(content)
	if !ok {
		return content, false
	}
	if bytes.HasPrefix(content[start:], []byte(beginMarkerNL)) {
		eol := blockEOL(content[start:end])
		if start >= len(eol) && string(content[start-len(eol):start]) == eol {
			start -= len(eol)
		}
	}
	out := make([]byte, 0, len(content)-(end-start))
	out = append(out, content[:start]...)
	return append(out, content[end:]...), true
}

// findBlock locates the last intact managed block: the five exact lines, each ending with the
// same line ending, starting at the beginning of a line. It returns the byte range.
func findBlock(content []byte) (start, end int, ok bool) {
	search := content
	for {
		i := bytes.LastIndex(search, []byte(blockBeginPrefix))
		if i < 0 {
			return 0, 0, false
		}
		if i == 0 || content[i-1] == '\n' {
			if n, good := blockAt(content[i:]); good {
				return i, i + n, true
			}
		}
		search = content[:i]
	}
}

// blockAt reports whether b starts with an intact block and returns its length in bytes.
func blockAt(b []byte) (int, bool) {
	eol := blockEOL(b)
	if eol == "" {
		return 0, false
	}
	want := []string{"", blockBodyOpen, blockBodyStmt, blockBodyClose, endMarker}
	n := 0
	for k := 0; k < blockLineCount; k++ {
		i := bytes.Index(b[n:], []byte(eol))
		if i < 0 {
			return 0, false
		}
		line := string(b[n : n+i])
		if k == 0 {
			if line != beginMarker && line != beginMarkerNL {
				return 0, false
			}
		} else if line != want[k] || strings.HasSuffix(line, "\r") {
			return 0, false
		}
		n += i + len(eol)
	}
	return n, true
}

// blockEOL is the line ending of the begin marker line at the start of b.
func blockEOL(b []byte) string {
	i := bytes.IndexByte(b, '\n')
	switch {
	case i < 0:
		return ""
	case i > 0 && b[i-1] == '\r':
		return "\r\n"
	default:
		return "\n"
	}
}
