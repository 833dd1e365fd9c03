package apacheconf

import (
	"bytes"
	"iter"
	"strings"
)

// stmt is one logical line of an Apache config file: a directive, a container opening
// (<VirtualHost ...>) or a container closing (</VirtualHost>).
type stmt struct {
	// Line is the physical line the statement starts on (1-based); End the one Apache
	// reports for it (DUMP_CONFIG's "# N:"): its last, and one more when a continuation
	// runs into the end of the file.
	Line, End int
	Name      string // directive or container name as written
	Args      []string
	Open      bool   // <Name args>
	Close     bool   // </Name>
	text      string // the logical line, trimmed: what ${VAR} expansion works on
}

// lex splits config text into statements the way Apache's ap_cfg_getline and ap_getword_conf
// read it: a backslash right before a line feed (a CR between them is allowed) joins the next
// physical line, unless it is itself escaped by a backslash (server/util.c matches
// `[^\\]\\[\r]\n` only). The join happens before comment detection, so a comment ending in
// "\" swallows the next line. A backslash followed by blanks, or on a last line without a line
// feed, joins nothing and stays part of the line. Lines starting with "#" are comments, and
// arguments may be quoted with " or '. (The differential test against Apache's own
// DUMP_CONFIG proves these rules.)
func lex(data []byte) []stmt {
	var out []stmt
	for s := range statements(data) {
		out = append(out, s)
	}
	return out
}

// statements is lex as an iterator: the walker handles each statement as it comes, so a
// 20 MB httpd.conf is never held as hundreds of thousands of statements at once, and the
// logical-line buffer is reused.
func statements(data []byte) iter.Seq[stmt] {
	return func(yield func(stmt) bool) {
		var logical []byte
		open := false // a logical line is being joined
		start, num := 0, 0
		for len(data) > 0 {
			num++
			var phys []byte
			lf := false
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				phys, data, lf = data[:i], data[i+1:], true
			} else {
				phys, data = data, nil
			}
			if !open {
				start, open, logical = num, true, logical[:0]
			}
			body := bytes.TrimSuffix(phys, []byte("\r"))
			end := num
			if n := len(body); lf && n >= 2 && body[n-1] == '\\' && body[n-2] != '\\' {
				logical = append(logical, body[:n-1]...)
				if len(data) > 0 {
					continue
				}
				end++ // ap_cfg_getline counts the empty line the continuation runs into
			} else {
				logical = append(logical, phys...)
			}
			open = false
			if s, ok := parseStmt(logical); ok {
				s.Line, s.End = start, end
				if !yield(s) {
					return
				}
			}
		}
	}
}

func parseStmt(line []byte) (stmt, bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return stmt{}, false
	}
	return parseText(string(line))
}

// parseText splits a trimmed, non-comment logical line into a statement.
func parseText(text string) (stmt, bool) {
	s, ok := parseWords(text)
	s.text = text
	return s, ok
}

func parseWords(text string) (stmt, bool) {
	if strings.HasPrefix(text, "</") {
		name := strings.TrimSpace(strings.TrimSuffix(text[2:], ">"))
		if name == "" {
			return stmt{}, false
		}
		return stmt{Name: name, Close: true}, true
	}
	if text[0] == '<' {
		body := strings.TrimSpace(strings.TrimSuffix(text[1:], ">"))
		words := splitArgs(body)
		if len(words) == 0 {
			return stmt{}, false
		}
		return stmt{Name: words[0], Args: words[1:], Open: true}, true
	}
	words := splitArgs(text)
	if len(words) == 0 {
		return stmt{}, false
	}
	return stmt{Name: words[0], Args: words[1:]}, true
}

// splitArgs follows ap_getword_conf: whitespace separates words; a word that starts with a
// quote runs to the matching quote, inside which a backslash escapes that quote.
func splitArgs(s string) []string {
	words := make([]string, 0, 4) // most directives have one to three arguments
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			return words
		}
		if q := s[i]; q == '"' || q == '\'' {
			var b strings.Builder
			i++
			for ; i < len(s) && s[i] != q; i++ {
				if s[i] == '\\' && i+1 < len(s) && s[i+1] == q {
					i++
				}
				b.WriteByte(s[i])
			}
			words = append(words, b.String())
			if i < len(s) {
				i++
			}
			continue
		}
		j := i
		for j < len(s) && s[j] != ' ' && s[j] != '\t' {
			j++
		}
		words = append(words, s[i:j])
		i = j
	}
}

// transparent reports whether the include, read alone, can take a container as holding (the
// walker evaluates conditionals against the whole config; the include editor only sees its
// own file). Only <IfModule ssl_module> / <IfModule mod_ssl.c> and the stapling cache's
// <IfModule socache_shmcb_module> (cPanel's template nests them) hold there: every stapling
// directive needs mod_ssl anyway, and stapling a cache. Anything else (a name Apache does not know, such as
// `mod_ssl`; another module; a negation; <IfVersion>; <IfDefine>) might not hold, so an
// admin's `SSLUseStapling off` inside it is not trusted, and our block is written.
func transparent(s stmt) bool {
	if !strings.EqualFold(s.Name, "IfModule") || len(s.Args) != 1 {
		return false
	}
	switch s.Args[0] {
	case "ssl_module", "mod_ssl.c", "socache_shmcb_module", "mod_socache_shmcb.c":
		return true
	}
	return false
}
