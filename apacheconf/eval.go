package apacheconf

import (
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Apache is what Apache knows that the config files do not say: the modules compiled into
// httpd (`httpd -l`), its version (`httpd -v`) and the -D defines of its command line. The
// walker evaluates <IfModule>, <IfVersion> and <IfDefine> against it, as Apache 2.4 does while
// reading its config (server/core.c start_ifmod, start_ifdefine; modules/metadata/mod_version.c).
type Apache struct {
	Builtin []string // source file names of compiled-in modules: "core.c", "mod_so.c", ...
	Version string   // "2.4.62"
	Defines []string // -D NAME
}

// DefaultApache is cPanel EA4's httpd when it cannot be asked: core, mod_so and http_core are
// compiled into every Apache 2.4; EA4 ships the rest as shared modules, loaded by LoadModule
// lines the walker reads. The version is the 2.4 line FACTS.md checked (2.4.62).
var DefaultApache = Apache{Builtin: []string{"core.c", "mod_so.c", "http_core.c"}, Version: "2.4.62"}

// conditional names the containers that are not scopes: Apache reads what they hold or not,
// once, while parsing (FACTS.md section 4: <IfModule> is not a scope).
func conditional(name string) bool {
	return strings.EqualFold(name, "IfModule") || strings.EqualFold(name, "IfVersion") || strings.EqualFold(name, "IfDefine")
}

// evalState is what the walker knows so far while reading: the modules loaded by the
// LoadModule lines read, and the variables defined.
type evalState struct {
	apache  Apache
	idents  map[string]bool // module identifiers loaded: what `httpd -M` lists
	modules map[string]bool // module identifiers (ssl_module) and source names (mod_ssl.c)
	defines map[string]string
	defined map[string]bool
}

func newEvalState(a Apache) *evalState {
	e := &evalState{apache: a, idents: map[string]bool{}, modules: map[string]bool{}, defines: map[string]string{}, defined: map[string]bool{}}
	for _, m := range a.Builtin {
		id := builtinIdent(m)
		e.modules[m], e.modules[id], e.idents[id] = true, true, true
	}
	for _, d := range a.Defines {
		e.defined[d] = true
	}
	return e
}

// loadModule records `LoadModule ident path`: Apache's <IfModule> accepts the identifier or
// the module's source file name, which for a shared module is its file name with .c for .so
// (mod_ssl.so was built from mod_ssl.c). `<IfModule mod_ssl>` matches neither.
func (e *evalState) loadModule(ident, file string) {
	e.modules[ident], e.idents[ident] = true, true
	base := path.Base(file)
	switch {
	case strings.HasPrefix(base, "mod_mpm_") && strings.HasSuffix(base, ".so"):
		// The MPMs are built from prefork.c, worker.c, event.c.
		e.modules[strings.TrimSuffix(strings.TrimPrefix(base, "mod_mpm_"), ".so")+".c"] = true
	case strings.HasPrefix(base, "mod_") && strings.HasSuffix(base, ".so"):
		e.modules[strings.TrimSuffix(base, ".so")+".c"] = true
	}
}

// builtinIdent is a compiled-in module's identifier from its source file name, as `httpd -M`
// lists it: mod_so.c is so_module, core.c core_module; http_core.c and the MPMs are named
// otherwise in their sources.
func builtinIdent(source string) string {
	switch source {
	case "http_core.c":
		return "http_module"
	case "prefork.c", "worker.c", "event.c":
		return "mpm_" + strings.TrimSuffix(source, ".c") + "_module"
	}
	return strings.TrimSuffix(strings.TrimPrefix(source, "mod_"), ".c") + "_module"
}

// define is Define NAME [VALUE], as server/core.c's set_define: the name becomes defined for
// <IfDefine>; a value is recorded for ${NAME}. Without one, a value an earlier Define gave is
// kept, and a name that never had one stays as written in ${NAME} (AH00111).
func (e *evalState) define(name, value string, hasValue bool) {
	e.defined[name] = true
	if hasValue {
		e.defines[name] = value
	}
}

// undefine is UnDefine NAME.
func (e *evalState) undefine(name string) { delete(e.defined, name); delete(e.defines, name) }

var varRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`)

// expand substitutes ${NAME} with the value Define gave it, as Apache does for every config
// line; an undefined variable is left as written (Apache warns, AH00111, and does the same).
func (e *evalState) expand(s string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := e.defines[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
	if len(out) > maxExpanded {
		// `Define A ${A}${A}` repeated doubles a value each time: a few dozen such lines
		// (a tenant's userdata include, a fuzzer) would exhaust memory. Past the bound the
		// reference is left as written.
		return s
	}
	return out
}

// maxExpanded bounds a value after ${VAR} expansion: far beyond any real directive.
const maxExpanded = 64 * 1024

// expandStmt expands ${NAME} in a statement as server/config.c's ap_build_config_sub does:
// on the whole logical line, before it is split into words (RESOLVE_ENV_PER_TOKEN is not
// defined), so a value may hold several words, quotes, or the directive's name itself.
func (e *evalState) expandStmt(s stmt) stmt {
	if !strings.Contains(s.text, "${") {
		return s
	}
	x := strings.TrimSpace(e.expand(s.text))
	if x == s.text {
		return s
	}
	n, ok := parseText(x)
	if !ok { // expanded to nothing: Apache skips an empty line
		n = stmt{text: x}
	}
	n.Line, n.End = s.Line, s.End
	return n
}

// holds reports whether a conditional container's contents apply.
func (e *evalState) holds(s stmt) bool {
	args := s.Args
	switch strings.ToLower(s.Name) {
	case "ifmodule":
		if len(args) == 0 {
			return false
		}
		name, neg := strings.CutPrefix(args[0], "!")
		return e.modules[unquote(name)] != neg
	case "ifdefine":
		if len(args) == 0 {
			return false
		}
		name, neg := strings.CutPrefix(args[0], "!")
		return e.defined[unquote(name)] != neg
	case "ifversion":
		return versionHolds(e.apache.Version, args)
	}
	return true
}

// unquote strips the quotes Apache strips from a container's argument after its "!".
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// versionHolds is mod_version's <IfVersion [[!]operator] version>: = == > >= < <= on
// major.minor.patch (missing parts are 0), ~ or /regex/ on the version string.
func versionHolds(have string, args []string) bool {
	op, want := "=", ""
	switch len(args) {
	case 1:
		want = args[0]
	case 2:
		op, want = args[0], args[1]
	default:
		return false
	}
	op, neg := strings.CutPrefix(op, "!")
	var ok bool
	switch {
	case op == "~" || (strings.HasPrefix(want, "/") && strings.HasSuffix(want, "/") && len(want) > 1):
		re, err := regexp.Compile(strings.Trim(want, "/"))
		ok = err == nil && re.MatchString(have)
	default:
		c := compareVersions(have, want)
		switch op {
		case "=", "==":
			ok = c == 0
		case ">":
			ok = c > 0
		case ">=":
			ok = c >= 0
		case "<":
			ok = c < 0
		case "<=":
			ok = c <= 0
		default:
			return false
		}
	}
	return ok != neg
}

func compareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionParts(v string) [3]int {
	var out [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		n, _ := strconv.Atoi(strings.TrimFunc(p, func(r rune) bool { return r < '0' || r > '9' }))
		out[i] = n
	}
	return out
}
