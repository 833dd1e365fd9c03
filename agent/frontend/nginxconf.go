package frontend

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// NginxConf is the host path of NGINX's main configuration on cPanel (ea-nginx's
// --conf-path) and Engintron hosts alike.
const NginxConf = "/etc/nginx/nginx.conf"

// Limits on reading NGINX's configuration. ea-nginx writes one file per cPanel user, so a
// big host has thousands; each cap is far above a real host's.
const (
	maxNginxFiles = 100000
	maxNginxBytes = 2 << 30 // all files together
	maxNginxDepth = 64      // nested includes; nginx itself has no limit, a loop would never end
	maxNginxArgs  = 1024    // words in one directive
)

// NginxConfig is NGINX's configuration as far as stapling goes.
type NginxConfig struct {
	// Files are every file read, as host paths, in the order nginx reads them (the order
	// `nginx -T` prints them).
	Files   []string      `json:"files"`
	Servers []NginxServer `json:"servers"`
}

// NginxServer is one http{} server{} block with its effective stapling settings: its own
// value, else the http{} block's, else nginx's default (ngx_http_ssl_module's merge).
type NginxServer struct {
	Names  []string `json:"server_names"`
	Listen []string `json:"listen"` // each listen directive's words joined by spaces
	// SSL: some listen has the "ssl" parameter, or the server (or http) says "ssl on".
	SSL            bool     `json:"ssl"`
	Stapling       bool     `json:"stapling"`
	StaplingVerify bool     `json:"stapling_verify"`
	StaplingAt     string   `json:"stapling_at,omitempty"` // file:line of the ssl_stapling that applies; "" = default off
	Resolver       []string `json:"resolver,omitempty"`    // the resolver directive's words; none: nginx cannot re-resolve responders
	// StaplingResponder and StaplingFile override the certificate's OCSP URL / the fetch.
	StaplingResponder string   `json:"stapling_responder,omitempty"`
	StaplingFile      string   `json:"stapling_file,omitempty"`
	Certificates      []string `json:"certificates,omitempty"` // ssl_certificate paths (host paths as written)
	File              string   `json:"file"`
	Line              int      `json:"line"`
}

// ErrNginxSyntax: the configuration is not one nginx would load; the error says where.
var ErrNginxSyntax = errors.New("nginx configuration error")

// nginxDirective is one parsed directive, with its block if it has one.
type nginxDirective struct {
	args  []string
	file  string
	line  int
	block []nginxDirective
	isBlk bool
}

// settings is what a level (http, server) sets; nil/"" = not set at this level.
type settings struct {
	stapling, verify, sslOn *bool
	stapAt                  string
	resolver                []string
	certs                   []string
	responder, file         *string
}

// ReadNginxConfig reads conf (a host path; "" means NginxConf) under root, following
// include directives as nginx does: relative paths are relative to the main file's
// directory (nginx's conf prefix), patterns with * ? [ are globbed and read in glob(3)'s
// order (byte order, dot files not matched by a wildcard), a pattern matching nothing is
// fine and a plain path that is missing is an error. Files are read with
// apacheconf.ReadFile (regular files only, apacheconf.MaxConfigFile each).
func ReadNginxConfig(ctx context.Context, root, conf string) (*NginxConfig, error) {
	if conf == "" {
		conf = NginxConf
	}
	r := &nginxReader{ctx: ctx, root: root, prefix: path.Dir(conf) + "/"}
	top, err := r.parseFile(conf, 0)
	if err != nil {
		return nil, err
	}
	cfg := &NginxConfig{Files: r.files, Servers: []NginxServer{}}
	for _, d := range top {
		if d.isBlk && d.args[0] == "http" {
			if err := collectHTTP(cfg, d.block); err != nil {
				return nil, err
			}
		}
	}
	return cfg, nil
}

type nginxReader struct {
	ctx    context.Context
	root   string
	prefix string
	files  []string
	bytes  int64
}

// parseFile reads one file (a host path) into directives, expanding includes in place.
func (r *nginxReader) parseFile(hostPath string, depth int) ([]nginxDirective, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	if depth > maxNginxDepth {
		return nil, fmt.Errorf("%w: includes nested deeper than %d at %s", ErrNginxSyntax, maxNginxDepth, hostPath)
	}
	if len(r.files) >= maxNginxFiles {
		return nil, fmt.Errorf("%w: more than %d files", ErrNginxSyntax, maxNginxFiles)
	}
	data, err := apacheconf.ReadFile(apacheconf.HostPath(r.root, hostPath), apacheconf.MaxConfigFile)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", hostPath, err)
	}
	r.bytes += int64(len(data))
	if r.bytes > maxNginxBytes {
		return nil, fmt.Errorf("read %s: configuration over %d bytes: %w", hostPath, int64(maxNginxBytes), apacheconf.ErrTooLarge)
	}
	r.files = append(r.files, hostPath)
	t := &tokenizer{data: data, file: hostPath, line: 1}
	ds, err := r.parseBlock(t, false, depth)
	return ds, err
}

// parseBlock reads directives up to the end of the file or, inside a block, its "}".
func (r *nginxReader) parseBlock(t *tokenizer, inBlock bool, depth int) ([]nginxDirective, error) {
	var out []nginxDirective
	for {
		args, line, end, err := t.next()
		if err != nil {
			return nil, err
		}
		switch end {
		case endEOF:
			if inBlock {
				return nil, t.errorf("unexpected end of file, expecting \"}\"")
			}
			return out, nil
		case endBlockDone:
			if !inBlock {
				return nil, t.errorf("unexpected \"}\"")
			}
			return out, nil
		case endBlockStart:
			sub, err := r.parseBlock(t, true, depth)
			if err != nil {
				return nil, err
			}
			out = append(out, nginxDirective{args: args, file: t.file, line: line, block: sub, isBlk: true})
		case endDirective:
			if args[0] == "include" {
				if len(args) != 2 {
					return nil, t.errorf("invalid number of arguments in \"include\" directive")
				}
				inc, err := r.include(args[1], depth)
				if err != nil {
					return nil, err
				}
				out = append(out, inc...)
				continue
			}
			out = append(out, nginxDirective{args: args, file: t.file, line: line})
		}
	}
}

// include expands one include directive (ngx_conf_include).
func (r *nginxReader) include(pattern string, depth int) ([]nginxDirective, error) {
	if !path.IsAbs(pattern) {
		pattern = r.prefix + pattern
	}
	if !strings.ContainsAny(pattern, "*?[") {
		return r.parseFile(pattern, depth+1)
	}
	rooted := apacheconf.HostPath(r.root, pattern)
	matches, err := filepath.Glob(rooted)
	if err != nil {
		return nil, fmt.Errorf("%w: glob %q: %v", ErrNginxSyntax, pattern, err)
	}
	// glob(3) sorts whole paths in the C locale (nginx never calls setlocale) and, unlike
	// filepath.Glob, does not let a wildcard match a leading dot.
	sort.Strings(matches)
	var out []nginxDirective
	patBase := path.Base(pattern)
	for _, m := range matches {
		host := apacheconf.Unroot(r.root, m)
		if strings.HasPrefix(path.Base(host), ".") && !strings.HasPrefix(patBase, ".") {
			continue
		}
		ds, err := r.parseFile(host, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

type tokenEnd int

const (
	endDirective tokenEnd = iota
	endBlockStart
	endBlockDone
	endEOF
)

// tokenizer is ngx_conf_read_token: words are separated by spaces, tabs, CR and LF; ";"
// ends a directive and "{" opens a block; "}" closes one only where a word could start;
// "#" starts a comment only where a word could start; '...' and "..." quote, and a quoted
// word must be followed by a space, ";", "{" or ")"; a backslash takes the next character
// literally, and in the word \" \' \\ lose the backslash while \t \r \n become the control
// characters; "${" keeps its brace inside a word.
type tokenizer struct {
	data []byte
	pos  int
	file string
	line int
}

func (t *tokenizer) errorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s in %s:%d", ErrNginxSyntax, fmt.Sprintf(format, a...), t.file, t.line)
}

// next returns the words of the next directive and how it ended.
func (t *tokenizer) next() (args []string, line int, end tokenEnd, err error) {
	var (
		lastSpace = true
		needSpace bool
		sharp     bool
		quoted    bool
		dq, sq    bool
		variable  bool
		start     int
		startLine = t.line
	)
	for {
		if t.pos >= len(t.data) {
			if len(args) > 0 || !lastSpace {
				return nil, 0, 0, t.errorf("unexpected end of file, expecting \";\" or \"}\"")
			}
			return nil, 0, endEOF, nil
		}
		ch := t.data[t.pos]
		t.pos++
		if ch == '\n' {
			t.line++
			sharp = false
		}
		if sharp {
			continue
		}
		if quoted {
			quoted = false
			continue
		}
		if needSpace {
			switch ch {
			case ' ', '\t', '\r', '\n':
				lastSpace, needSpace = true, false
				continue
			case ';':
				return args, startLine, endDirective, nil
			case '{':
				return args, startLine, endBlockStart, nil
			case ')':
				lastSpace, needSpace = true, false
			default:
				return nil, 0, 0, t.errorf("unexpected %q", ch)
			}
		}
		if lastSpace {
			start = t.pos - 1
			if len(args) == 0 {
				startLine = t.line
			}
			switch ch {
			case ' ', '\t', '\r', '\n':
				continue
			case ';', '{':
				if len(args) == 0 {
					return nil, 0, 0, t.errorf("unexpected %q", ch)
				}
				if ch == '{' {
					return args, startLine, endBlockStart, nil
				}
				return args, startLine, endDirective, nil
			case '}':
				if len(args) != 0 {
					return nil, 0, 0, t.errorf("unexpected \"}\"")
				}
				return nil, t.line, endBlockDone, nil
			case '#':
				sharp = true
				continue
			case '\\':
				quoted, lastSpace = true, false
				continue
			case '"':
				start++
				dq, lastSpace = true, false
				continue
			case '\'':
				start++
				sq, lastSpace = true, false
				continue
			case '$':
				variable, lastSpace = true, false
				continue
			default:
				lastSpace = false
			}
			continue
		}
		if ch == '{' && variable {
			continue
		}
		variable = false
		if ch == '\\' {
			quoted = true
			continue
		}
		if ch == '$' {
			variable = true
			continue
		}
		found := false
		switch {
		case dq:
			if ch == '"' {
				dq, needSpace, found = false, true, true
			}
		case sq:
			if ch == '\'' {
				sq, needSpace, found = false, true, true
			}
		case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == ';' || ch == '{':
			lastSpace, found = true, true
		}
		if !found {
			continue
		}
		if len(args) >= maxNginxArgs {
			return nil, 0, 0, t.errorf("more than %d words in a directive", maxNginxArgs)
		}
		args = append(args, unescapeWord(t.data[start:t.pos-1]))
		if ch == ';' {
			return args, startLine, endDirective, nil
		}
		if ch == '{' {
			return args, startLine, endBlockStart, nil
		}
	}
}

// unescapeWord is the copy loop of ngx_conf_read_token.
func unescapeWord(src []byte) string {
	var b strings.Builder
	b.Grow(len(src))
	for i := 0; i < len(src); {
		if src[i] == '\\' && i+1 < len(src) {
			switch src[i+1] {
			case '"', '\'', '\\':
				i++
			case 't':
				b.WriteByte('\t')
				i += 2
				continue
			case 'r':
				b.WriteByte('\r')
				i += 2
				continue
			case 'n':
				b.WriteByte('\n')
				i += 2
				continue
			}
		}
		b.WriteByte(src[i])
		i++
	}
	return b.String()
}

// collectHTTP reads the http{} block's settings and its servers.
func collectHTTP(cfg *NginxConfig, http []nginxDirective) error {
	var top settings
	for _, d := range http {
		if err := top.apply(d); err != nil {
			return err
		}
	}
	for _, d := range http {
		if !d.isBlk || d.args[0] != "server" {
			continue
		}
		var own settings
		s := NginxServer{File: d.file, Line: d.line, Names: []string{}, Listen: []string{}}
		for _, sd := range d.block {
			if err := own.apply(sd); err != nil {
				return err
			}
			if sd.isBlk {
				continue
			}
			switch sd.args[0] {
			case "server_name":
				s.Names = append(s.Names, sd.args[1:]...)
			case "listen":
				s.Listen = append(s.Listen, strings.Join(sd.args[1:], " "))
				for _, a := range sd.args[2:] {
					if a == "ssl" {
						s.SSL = true
					}
				}
			}
		}
		s.Stapling, s.StaplingAt = own.flag(top, func(x settings) *bool { return x.stapling })
		s.StaplingVerify, _ = own.flag(top, func(x settings) *bool { return x.verify })
		if on, _ := own.flag(top, func(x settings) *bool { return x.sslOn }); on {
			s.SSL = true
		}
		s.Resolver = own.resolver
		if s.Resolver == nil {
			s.Resolver = top.resolver
		}
		s.Certificates = own.certs
		if s.Certificates == nil {
			s.Certificates = top.certs
		}
		for _, p := range []struct {
			dst      *string
			own, top *string
		}{{&s.StaplingResponder, own.responder, top.responder}, {&s.StaplingFile, own.file, top.file}} {
			if p.own != nil {
				*p.dst = *p.own
			} else if p.top != nil {
				*p.dst = *p.top
			}
		}
		cfg.Servers = append(cfg.Servers, s)
	}
	return nil
}

// flag merges a flag as ngx_conf_merge_value does: this level's, else the parent's, else off.
func (own settings) flag(top settings, get func(settings) *bool) (bool, string) {
	if v := get(own); v != nil {
		return *v, own.stapAt
	}
	if v := get(top); v != nil {
		return *v, top.stapAt
	}
	return false, ""
}

// apply records one directive of a level. Duplicates are errors, as in nginx ("is duplicate").
func (s *settings) apply(d nginxDirective) error {
	if d.isBlk {
		return nil
	}
	at := fmt.Sprintf("%s:%d", d.file, d.line)
	setFlag := func(dst **bool) error {
		if len(d.args) != 2 {
			return fmt.Errorf("%w: invalid number of arguments in %q directive in %s", ErrNginxSyntax, d.args[0], at)
		}
		if *dst != nil {
			return fmt.Errorf("%w: %q directive is duplicate in %s", ErrNginxSyntax, d.args[0], at)
		}
		var v bool
		switch strings.ToLower(d.args[1]) {
		case "on":
			v = true
		case "off":
		default:
			return fmt.Errorf("%w: invalid value %q in %q directive, it must be \"on\" or \"off\" in %s", ErrNginxSyntax, d.args[1], d.args[0], at)
		}
		*dst = &v
		return nil
	}
	setStr := func(dst **string) error {
		if len(d.args) != 2 {
			return fmt.Errorf("%w: invalid number of arguments in %q directive in %s", ErrNginxSyntax, d.args[0], at)
		}
		if *dst != nil {
			return fmt.Errorf("%w: %q directive is duplicate in %s", ErrNginxSyntax, d.args[0], at)
		}
		v := d.args[1]
		*dst = &v
		return nil
	}
	switch d.args[0] {
	case "ssl_stapling":
		if err := setFlag(&s.stapling); err != nil {
			return err
		}
		s.stapAt = at
	case "ssl_stapling_verify":
		return setFlag(&s.verify)
	case "ssl":
		return setFlag(&s.sslOn)
	case "ssl_stapling_responder":
		return setStr(&s.responder)
	case "ssl_stapling_file":
		return setStr(&s.file)
	case "resolver":
		if s.resolver != nil {
			return fmt.Errorf("%w: \"resolver\" directive is duplicate in %s", ErrNginxSyntax, at)
		}
		if len(d.args) < 2 {
			return fmt.Errorf("%w: invalid number of arguments in \"resolver\" directive in %s", ErrNginxSyntax, at)
		}
		s.resolver = append([]string{}, d.args[1:]...)
	case "ssl_certificate":
		if len(d.args) != 2 {
			return fmt.Errorf("%w: invalid number of arguments in \"ssl_certificate\" directive in %s", ErrNginxSyntax, at)
		}
		s.certs = append(s.certs, d.args[1])
	}
	return nil
}
