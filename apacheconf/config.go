package apacheconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// maxIncludeDepth mirrors Apache's AP_MAX_INCLUDE_DEPTH: deeper nesting is a config error.
const maxIncludeDepth = 128

// ErrIncludeCycle means an Include leads back to a file that is still being read.
var ErrIncludeCycle = errors.New("include cycle")

// Location is a place in the Apache config: a host path and a 1-based line.
type Location struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

// VHost is one <VirtualHost> block as read.
type VHost struct {
	Location
	OpenEnd    int      // the <VirtualHost> line's last physical line: where Apache says it is
	Addrs      []string // "*:443", "1.2.3.4:443"
	ServerName string
	Aliases    []string
	SSL        bool   // SSLEngine on
	CertFile   string // SSLCertificateFile, host path
	KeyFile    string
	ChainFile  string
	// Stapling is the vhost's own SSLUseStapling value ("on"/"off"), "" when it inherits.
	Stapling   string
	StaplingAt Location
	// Account is the cPanel account that owns the vhost: the user of cPanel's
	// `SuexecUserGroup USER GROUP` (inside <IfModule suexec_module>), else USER of a
	// DocumentRoot under /home/USER/; "" when neither says.
	Account      string
	DocumentRoot string
}

// Name is how an operator recognises the vhost: ServerName, else its first address.
func (v VHost) Name() string {
	if v.ServerName != "" {
		return v.ServerName
	}
	if len(v.Addrs) > 0 {
		return v.Addrs[0]
	}
	return fmt.Sprintf("%s:%d", v.File, v.Line)
}

// Directive is one directive Apache applies, where it stands.
type Directive struct {
	Name string   // as written
	Args []string // quotes removed, ${VAR} expanded
	Location
	End   int       // last physical line (continuations), where Apache says it is
	VHost *Location // the <VirtualHost> it is in; nil at global scope
}

// Traced are the directives (lower-cased names) a Config records in Trace: what the agent's
// decisions rest on, and what the differential test compares with Apache's own DUMP_CONFIG.
var Traced = map[string]bool{"sslusestapling": true, "sslstaplingcache": true, "errorlog": true, "errorlogformat": true, "include": true, "includeoptional": true}

// Config is the part of Apache's effective configuration stapling depends on.
type Config struct {
	// Trace lists, in reading order, every Traced directive Apache would apply.
	Trace []Directive
	Files []string // host paths read, in reading order
	// Global is the last global-scope SSLUseStapling value, "" when never set (Apache: off).
	Global        string
	GlobalAt      Location
	StaplingCache string
	// ResponderTimeout is the global SSLStaplingResponderTimeout in seconds, 0 when unset
	// (Apache's default is 10; cPanel's template sets 3).
	ResponderTimeout int
	// OCSPProxyURL is the global SSLOCSPProxyURL: mod_ssl then reaches every responder
	// through this HTTP proxy, and its error lines name the proxy.
	OCSPProxyURL string
	// ErrorLog is the main server's ErrorLog as written ("" when unset: Apache's default,
	// logs/error_log under ServerRoot), and where the last one stands.
	ErrorLog   string
	ErrorLogAt Location
	// ErrorLogFormat is the main server's ErrorLogFormat ("" for Apache's default format),
	// and ErrorLogFormatAt where the last one stands (nil when unset). A format given for
	// "connection" or "request" adds lines of its own and changes no other line: not kept.
	ErrorLogFormat   string
	ErrorLogFormatAt *Location
	// VHostFormats are the vhosts that set an ErrorLogFormat of their own: mod_ssl logs a
	// vhost's stapling failures in its format (to the main error_log unless it has its own).
	VHostFormats []Directive
	serverRoot   string
	loaded       []string
	defines      []string
	VHosts       []VHost
	// Warnings are things Apache itself might reject or that were skipped (unmatched Include).
	Warnings []string

	globalFiles []fileID // files included at global scope, for Includes
	globalRefs  []string // paths named by a global Include line, read or not
}

type fileID struct {
	host string
	info fs.FileInfo
}

// Stapling is effective OCSP stapling as clients see it.
type Stapling string

const (
	StaplingOn      Stapling = "on"      // on for every SSL vhost
	StaplingOff     Stapling = "off"     // on for none
	StaplingMixed   Stapling = "mixed"   // off globally, but some SSL vhost turns it back on: our fix does not reach it
	StaplingUnknown Stapling = "unknown" // the config could not be read
)

// StaplingOf reports whether stapling is on for v: its own SSLUseStapling, else the global
// value it inherits (Apache's default: off). This is the one place the inheritance rule lives.
func (c *Config) StaplingOf(v VHost) bool {
	if v.Stapling != "" {
		return v.Stapling == "on"
	}
	return c.Global == "on"
}

// EffectiveStapling summarises what clients get: on when stapling is on for every SSL vhost
// that has it, off when no SSL vhost has it, mixed when the global value is off but some SSL
// vhost turns it back on (our fix does not reach it).
func (c *Config) EffectiveStapling() Stapling {
	global := StaplingOff
	if c.Global == "on" {
		global = StaplingOn
	}
	ssl, on := 0, 0
	for _, v := range c.VHosts {
		if !v.SSL {
			continue
		}
		ssl++
		if c.StaplingOf(v) {
			on++
		}
	}
	switch {
	case ssl == 0:
		return global
	case on == 0:
		return StaplingOff
	case global == StaplingOn:
		return StaplingOn
	default:
		return StaplingMixed
	}
}

// LoadedModules are the module identifiers loaded when the whole config has been read
// (compiled-in and LoadModule), sorted: what `httpd -M` lists.
func (c *Config) LoadedModules() []string { return c.loaded }

// Defines are the variables defined when the whole config has been read, NAME or
// NAME=VALUE, sorted: what `httpd -S` lists as "Define:".
func (c *Config) Defines() []string { return c.defines }

// ErrorLogFile is the host path of the file Apache writes its main error log to: the global
// ErrorLog, ServerRoot-relative when not absolute (ap_server_root_relative), or fallback (the
// layout's) when the config does not set one. A piped or syslog ErrorLog is no file the agent
// can read: that is an error naming the directive.
func (c *Config) ErrorLogFile(fallback string) (string, error) {
	v := c.ErrorLog
	switch {
	case v == "":
		return fallback, nil
	case strings.HasPrefix(v, "|") || strings.HasPrefix(strings.ToLower(v), "syslog"):
		return "", fmt.Errorf("ErrorLog %q at %s:%d is not a file: the agent reads Apache's error log from a file only", v, c.ErrorLogAt.File, c.ErrorLogAt.Line)
	case path.IsAbs(v):
		return path.Clean(v), nil
	}
	return path.Join(c.serverRoot, v), nil
}

// Overrides lists the vhosts that set SSLUseStapling themselves.
func (c *Config) Overrides() []VHost {
	var out []VHost
	for _, v := range c.VHosts {
		if v.Stapling != "" {
			out = append(out, v)
		}
	}
	return out
}

// Includes reports whether hostPath is read at global scope (so a directive there applies to
// the main server). It compares by path and by file identity, since EA4 symlinks old paths.
//
// A file named by a global Include line that does not exist yet also counts: the line is
// there, and the file is about to be created.
func (c *Config) Includes(root, hostPath string) bool {
	for _, r := range c.globalRefs {
		if r == path.Clean(hostPath) {
			return true
		}
	}
	info, _ := os.Stat(HostPath(root, hostPath))
	for _, f := range c.globalFiles {
		if path.Clean(f.host) == path.Clean(hostPath) {
			return true
		}
		if info != nil && f.info != nil && os.SameFile(info, f.info) {
			return true
		}
	}
	return false
}

// ReadConfig walks the layout's httpd.conf as Apache does: Include and IncludeOptional with
// globs, quotes and ServerRoot-relative paths, <VirtualHost> scope, <IfModule> transparent.
// It only reads.
func ReadConfig(l *Layout) (*Config, error) {
	return ReadConfigWith(l, nil)
}

// ReadConfigWith reads the config as it would be with some files' contents replaced (keyed by
// host path), so a change can be judged before it is written.
func ReadConfigWith(l *Layout, override map[string][]byte) (*Config, error) {
	a := DefaultApache
	if l.Answers != nil {
		a = l.Answers.Apache
	}
	w := &walker{l: l, serverRoot: l.ServerRoot, cfg: &Config{}, override: override, ev: newEvalState(a), names: map[string]string{}}
	if err := w.file(l.HTTPDConf, nil, 0); err != nil {
		return nil, err
	}
	for id := range w.ev.idents {
		w.cfg.loaded = append(w.cfg.loaded, id)
	}
	sort.Strings(w.cfg.loaded)
	for name := range w.ev.defined {
		if v, ok := w.ev.defines[name]; ok {
			name += "=" + v
		}
		w.cfg.defines = append(w.cfg.defines, name)
	}
	sort.Strings(w.cfg.defines)
	return w.cfg, nil
}

type walker struct {
	l          *Layout
	serverRoot string
	cfg        *Config
	reading    []string // files being read, for cycle detection
	override   map[string][]byte
	vhost      *VHost
	ev         *evalState
	names      map[string]string // directive names as written, lowered (lower)
}

// lower is name in lower case. A config of 600,000 lines has a few dozen directive names,
// spelled as cPanel's template does: they are lowered once each, not once a line.
func (w *walker) lower(name string) string {
	if l, ok := w.names[name]; ok {
		return l
	}
	l := strings.ToLower(name)
	if len(w.names) < 1024 {
		w.names[name] = l
	}
	return l
}

// resolve makes an Apache path argument a clean host path: relative paths are relative to
// ServerRoot, as Apache's ap_server_root_relative does.
func (w *walker) resolve(p string) string {
	if !path.IsAbs(p) {
		p = path.Join(w.serverRoot, p)
	}
	return path.Clean(p)
}

func (w *walker) file(host string, stack []stmt, depth int) error {
	for _, r := range w.reading {
		if r == host {
			return fmt.Errorf("%w: %s includes itself via %s", ErrIncludeCycle, host, strings.Join(w.reading, " -> "))
		}
	}
	if depth > maxIncludeDepth {
		return fmt.Errorf("includes nested deeper than %d at %s", maxIncludeDepth, host)
	}
	data, ok := w.overridden(host)
	if !ok {
		var err error
		if data, err = ReadFile(w.l.Path(host), MaxConfigFile); err != nil {
			return fmt.Errorf("read %s: %w", host, err)
		}
	}
	w.cfg.Files = append(w.cfg.Files, host)
	if inGlobal(stack) && w.vhost == nil {
		info, _ := os.Stat(w.l.Path(host))
		w.cfg.globalFiles = append(w.cfg.globalFiles, fileID{host: host, info: info})
	}
	w.reading = append(w.reading, host)
	defer func() { w.reading = w.reading[:len(w.reading)-1] }()

	// Containers opened in a file must close in it, as in Apache; a container left open at
	// EOF is reported and closed so the next file is read at the right scope.
	base := len(stack)
	skip := 0 // depth inside a conditional section that does not hold: Apache reads none of it
	for s := range statements(data) {
		if skip > 0 {
			switch {
			case s.Open:
				skip++
			case s.Close:
				skip--
			case w.vhost != nil:
				// cPanel's ownership markers sit in conditionals (suexec, ruid2) that hold
				// only where those modules are loaded; whose vhost it is does not depend on it.
				w.owner(w.lower(s.Name), s)
			}
			continue
		}
		s = w.ev.expandStmt(s)
		at := Location{File: host, Line: s.Line}
		switch {
		case s.Open && conditional(s.Name):
			if !w.ev.holds(s) {
				skip = 1
				continue
			}
			stack = append(stack, s)
		case s.Open:
			stack = append(stack, s)
			if strings.EqualFold(s.Name, "VirtualHost") && w.vhost == nil {
				w.vhost = &VHost{Location: at, OpenEnd: s.End, Addrs: s.Args}
			}
		case s.Close:
			if len(stack) > base {
				top := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if strings.EqualFold(top.Name, "VirtualHost") && w.vhost != nil {
					w.cfg.VHosts = append(w.cfg.VHosts, *w.vhost)
					w.vhost = nil
				}
			}
		default:
			if err := w.directive(s, at, stack, depth); err != nil {
				return err
			}
		}
	}
	if len(stack) > base {
		w.cfg.Warnings = append(w.cfg.Warnings, fmt.Sprintf("%s: <%s> not closed", host, stack[len(stack)-1].Name))
		if w.vhost != nil && w.vhost.File == host {
			w.cfg.VHosts = append(w.cfg.VHosts, *w.vhost)
			w.vhost = nil
		}
	}
	return nil
}

func (w *walker) directive(s stmt, at Location, stack []stmt, depth int) error {
	name := w.lower(s.Name)
	if Traced[name] {
		d := Directive{Name: s.Name, Args: s.Args, Location: at, End: s.End}
		if w.vhost != nil {
			v := w.vhost.Location
			d.VHost = &v
		}
		w.cfg.Trace = append(w.cfg.Trace, d)
	}
	arg := func() string {
		if len(s.Args) > 0 {
			return s.Args[0]
		}
		return ""
	}
	switch name {
	case "serverroot":
		if w.vhost == nil && arg() != "" {
			w.serverRoot = path.Clean(arg())
		}
	case "include", "includeoptional":
		if arg() == "" {
			return nil
		}
		target := w.resolve(arg())
		if w.vhost == nil && inGlobal(stack) && !strings.ContainsAny(target, "*?[") {
			w.cfg.globalRefs = append(w.cfg.globalRefs, target)
		}
		files, err := w.expand(target)
		if err != nil {
			return err
		}
		if len(files) == 0 && name == "include" {
			w.cfg.Warnings = append(w.cfg.Warnings, fmt.Sprintf("%s:%d: Include %s matches no file", at.File, at.Line, arg()))
		}
		for _, f := range files {
			if err := w.file(f, stack, depth+1); err != nil {
				return err
			}
		}
	case "sslusestapling":
		v := strings.ToLower(arg())
		if v != "on" && v != "off" {
			return nil
		}
		switch {
		case w.vhost != nil && vhostScope(stack):
			w.vhost.Stapling, w.vhost.StaplingAt = v, at
		case w.vhost == nil && inGlobal(stack):
			w.cfg.Global, w.cfg.GlobalAt = v, at
		}
	case "loadmodule":
		if len(s.Args) >= 2 {
			w.ev.loadModule(s.Args[0], s.Args[1])
		}
	case "define":
		if len(s.Args) >= 1 {
			v := ""
			if len(s.Args) >= 2 {
				v = s.Args[1]
			}
			w.ev.define(s.Args[0], v, len(s.Args) >= 2)
		}
	case "undefine":
		if len(s.Args) >= 1 {
			w.ev.undefine(s.Args[0])
		}
	case "sslstaplingcache":
		if w.vhost == nil {
			w.cfg.StaplingCache = arg()
		}
	case "sslstaplingrespondertimeout":
		if n, err := strconv.Atoi(arg()); err == nil && n > 0 && w.vhost == nil {
			w.cfg.ResponderTimeout = n
		}
	case "errorlog":
		if w.vhost == nil && inGlobal(stack) && arg() != "" {
			w.cfg.ErrorLog, w.cfg.ErrorLogAt, w.cfg.serverRoot = arg(), at, w.serverRoot
		}
	case "errorlogformat":
		if len(s.Args) != 1 { // `ErrorLogFormat connection|request FORMAT`, or invalid
			break
		}
		switch {
		case w.vhost == nil && inGlobal(stack):
			a := at
			w.cfg.ErrorLogFormat, w.cfg.ErrorLogFormatAt = arg(), &a
		case w.vhost != nil && vhostScope(stack):
			v := w.vhost.Location
			w.cfg.VHostFormats = append(w.cfg.VHostFormats, Directive{Name: s.Name, Args: s.Args, Location: at, VHost: &v})
		}
	case "sslocspproxyurl":
		if w.vhost == nil {
			w.cfg.OCSPProxyURL = arg()
		}
	}
	if w.vhost != nil {
		w.owner(name, s)
	}
	if w.vhost == nil || !vhostScope(stack) {
		return nil
	}
	switch name {
	case "servername":
		w.vhost.ServerName = arg()
	case "documentroot":
		w.vhost.DocumentRoot = w.resolve(arg())
		if rest, ok := strings.CutPrefix(w.vhost.DocumentRoot, "/home/"); ok && w.vhost.Account == "" {
			if user, _, _ := strings.Cut(rest, "/"); user != "" {
				w.vhost.Account = user
			}
		}
	case "serveralias":
		w.vhost.Aliases = append(w.vhost.Aliases, s.Args...)
	case "sslengine":
		w.vhost.SSL = strings.EqualFold(arg(), "on")
	case "sslcertificatefile":
		w.vhost.CertFile = w.resolve(arg())
	case "sslcertificatekeyfile":
		w.vhost.KeyFile = w.resolve(arg())
	case "sslcertificatechainfile", "sslcacertificatefile":
		if name == "sslcertificatechainfile" || w.vhost.ChainFile == "" {
			w.vhost.ChainFile = w.resolve(arg())
		}
	}
	return nil
}

// owner reads cPanel's ownership marker wherever the template puts it in the vhost (inside
// <IfModule suexec_module><IfModule !mod_ruid2.c>, or mod_ruid2's RUidGid), even in a section
// that does not hold: which module is loaded changes how the account's code runs, not whose
// vhost it is.
func (w *walker) owner(n string, s stmt) {
	if (n == "suexecusergroup" || n == "ruidgid") && len(s.Args) > 0 {
		w.vhost.Account = s.Args[0]
	}
}

// overridden returns the replacement content for host: by path, or by file identity (device
// and inode), so an include reached through another path (cPanel's EA3-compatibility symlinks,
// an admin's own link) is still the one being changed, as it is for Apache.
func (w *walker) overridden(host string) ([]byte, bool) {
	if data, ok := w.override[host]; ok {
		return data, true
	}
	if len(w.override) == 0 {
		return nil, false
	}
	info, err := os.Stat(w.l.Path(host))
	if err != nil {
		return nil, false
	}
	for p, data := range w.override {
		if o, err := os.Stat(w.l.Path(p)); err == nil && os.SameFile(info, o) {
			return data, true
		}
	}
	return nil, false
}

// vhostScope: directly in the <VirtualHost>, through conditional sections only (the walker
// pushes only those that hold).
func vhostScope(stack []stmt) bool {
	seen := false
	for _, c := range stack {
		switch {
		case strings.EqualFold(c.Name, "VirtualHost"):
			seen = true
		case !conditional(c.Name):
			return false
		}
	}
	return seen
}

// inGlobal: at server scope, through conditional sections only (those that hold).
func inGlobal(stack []stmt) bool {
	for _, c := range stack {
		if !conditional(c.Name) {
			return false
		}
	}
	return true
}

// expand turns an Include argument into the files Apache reads, in Apache's order: a glob is
// matched and sorted; a directory is read whole (files sorted, subdirectories recursed).
func (w *walker) expand(host string) ([]string, error) {
	var matches []string
	if strings.ContainsAny(host, "*?[") {
		m, err := filepath.Glob(w.l.Path(host))
		if err != nil {
			return nil, fmt.Errorf("include pattern %s: %w", host, err)
		}
		for _, p := range m {
			// Apache's wildcard includes skip names starting with a dot (.hidden.conf, an
			// editor's swap file); a directory include reads them.
			if strings.HasPrefix(filepath.Base(p), ".") {
				continue
			}
			matches = append(matches, Unroot(w.l.Root, p))
		}
		// A file a change is about to create (an override with no file yet, such as a
		// per-vhost userdata include) matches the pattern as it will once written, so the
		// reading with the change is the reading Apache will make.
		for p := range w.override {
			if ok, _ := path.Match(host, p); ok && !strings.HasPrefix(path.Base(p), ".") && !slices.Contains(matches, p) {
				matches = append(matches, p)
			}
		}
		sort.Strings(matches)
	} else {
		matches = []string{host}
	}
	var out []string
	for _, m := range matches {
		if _, ok := w.override[m]; ok {
			out = append(out, m)
			continue
		}
		info, err := os.Stat(w.l.Path(m))
		if err != nil {
			continue
		}
		if !info.IsDir() {
			out = append(out, m)
			continue
		}
		entries, err := os.ReadDir(w.l.Path(m))
		if err != nil {
			return nil, fmt.Errorf("read directory %s: %w", m, err)
		}
		for _, e := range entries {
			sub, err := w.expand(path.Join(m, e.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		}
	}
	return out, nil
}

// Unroot turns a path under root back into the host path it stands for (HostPath's inverse);
// a path outside root is returned unchanged.
func Unroot(root, p string) string {
	if root == "" || root == "/" {
		return p
	}
	if rel, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(rel, "..") {
		return "/" + filepath.ToSlash(rel)
	}
	return p
}
