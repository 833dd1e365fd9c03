package apacheconf

import (
	"bytes"
	"strings"
)

// The managed block. The markers name the tool and say how to remove the block; its body is
// wrapped in <IfModule ssl_module> as cPanel's own templates wrap SSL directives. The begin
// marker also records the line endings ApplyBlock added above the block, so RemoveBlock can
// give back the admin's bytes exactly.
const (
	beginMarker   = "# BEGIN stapling-agent: OCSP stapling turned off (remove with: stapling-agent revert)"
	beginMarkerNL = "# BEGIN stapling-agent (newline added above): OCSP stapling turned off (remove with: stapling-agent revert)"
	// The file's last line continued onto the next (trailing backslash), so a blank line was
	// added to end that logical line before the block.
	beginMarkerCont = "# BEGIN stapling-agent (blank line added above to end a continuation): OCSP stapling turned off (remove with: stapling-agent revert)"
	// Both: the final newline was missing and the completed last line was a continuation.
	beginMarkerNLCont = "# BEGIN stapling-agent (newline and blank line added above to end a continuation): OCSP stapling turned off (remove with: stapling-agent revert)"
	endMarker         = "# END stapling-agent"
	blockBodyOpen     = "<IfModule ssl_module>"
	blockBodyStmt     = "    SSLUseStapling off"
	blockBodyClose    = "</IfModule>"
	directiveName     = "SSLUseStapling"
	blockLineCount    = 5
	blockBeginPrefix  = "# BEGIN stapling-agent"
)

// addedAbove maps each begin marker to how many line endings ApplyBlock wrote above it.
var addedAbove = map[string]int{
	beginMarker:       0,
	beginMarkerNL:     1,
	beginMarkerCont:   1,
	beginMarkerNLCont: 2,
}

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
// later "on", it is moved to the end so that it wins again. Line endings follow the file's
// first line ending (CRLF files stay CRLF).
//
// The block always starts a fresh logical line. A missing final newline is completed; then, if
// the last line ends in a continuation backslash, one empty line is added: Apache joins it onto
// the continued line, which ends there, instead of joining our begin marker onto the admin's
// directive ("KeepAliveTimeout 5 # BEGIN ...": configtest fails and every remediation rolls
// back). The begin marker records what was added, so RemoveBlock can restore the bytes exactly.
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
	out := make([]byte, 0, len(content)+320)
	out = append(out, content...)
	nl := len(content) > 0 && content[len(content)-1] != '\n'
	if nl {
		out = append(out, eol...)
	}
	cont := endsInContinuation(out)
	if cont {
		out = append(out, eol...)
	}
	begin := beginMarker
	switch {
	case nl && cont:
		begin = beginMarkerNLCont
	case nl:
		begin = beginMarkerNL
	case cont:
		begin = beginMarkerCont
	}
	for _, l := range []string{begin, blockBodyOpen, blockBodyStmt, blockBodyClose, endMarker} {
		out = append(out, l...)
		out = append(out, eol...)
	}
	return out, true
}

// endsInContinuation reports whether the last line of b, which is empty or ends in a newline,
// may continue onto the next line: a backslash last once trailing spaces, tabs and CR are
// trimmed (lex.go's rule when this was written). A comment line counts too: Apache joins lines
// before it looks for "#". Apache's own test (ap_cfg_getline_core) is narrower, a backslash
// right before [CR]LF (Apache 2.4.71 keeps a backslash followed by a space as an argument),
// and the rule here is kept the wider one on purpose: a blank line Apache did not need is
// harmless, a missing one makes the config test fail.
func endsInContinuation(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	last := b[bytes.LastIndexByte(b[:len(b)-1], '\n')+1 : len(b)-1]
	last = bytes.TrimRight(last, " \t\r")
	return len(last) > 0 && last[len(last)-1] == '\\'
}

// RemoveBlock returns content without our managed block (the last intact one), restoring the
// admin's bytes exactly, and whether a block was found. A block whose body was edited by hand
// is not ours to remove and is left alone.
//
// The line endings ApplyBlock added above the block (its begin marker says how many) go only
// when the block ends the file. When the admin wrote lines after it, those endings now keep
// the admin's lines apart: dropping them would glue the first such line onto the one before
// (or onto a continued line), which Apache would read as one directive.
func RemoveBlock(content []byte) ([]byte, bool) {
	start, end, ok := findBlock(content)
	if !ok {
		return content, false
	}
	if end == len(content) {
		eol := blockEOL(content[start:end])
		marker, _, _ := bytes.Cut(content[start:end], []byte(eol))
		for k := 0; k < addedAbove[string(marker)]; k++ {
			if start >= len(eol) && string(content[start-len(eol):start]) == eol {
				start -= len(eol)
			}
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
			if _, known := addedAbove[line]; !known {
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
