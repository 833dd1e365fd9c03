package apacheconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
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

// Config is the part of Apache's effective configuration stapling depends on.
type Config struct {
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
	w := &walker{l: l, serverRoot: l.ServerRoot, cfg: &Config{}, override: override}
	if err := w.file(l.HTTPDConf, nil, 0); err != nil {
		return nil, err
	}
	return w.cfg, nil
}

type walker struct {
	l          *Layout
	serverRoot string
	cfg        *Config
	reading    []string // files being read, for cycle detection
	override   map[string][]byte
	vhost      *VHost
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
	data, ok := w.override[host]
	if !ok {
		var err error
		if data, err = ReadFile(w.l.Path(host), MaxConfigFile); err != nil {
			return fmt.Errorf("read %s: %w", host, err)
		}
	}
	w.cfg.Files = append(w.cfg.Files, host)
	if globalScope(stack) && w.vhost == nil {
		info, _ := os.Stat(w.l.Path(host))
		w.cfg.globalFiles = append(w.cfg.globalFiles, fileID{host: host, info: info})
	}
	w.reading = append(w.reading, host)
	defer func() { w.reading = w.reading[:len(w.reading)-1] }()

	// Containers opened in a file must close in it, as in Apache; a container left open at
	// EOF is reported and closed so the next file is read at the right scope.
	base := len(stack)
	for _, s := range lex(data) {
		at := Location{File: host, Line: s.Line}
		switch {
		case s.Open:
			stack = append(stack, s)
			if strings.EqualFold(s.Name, "VirtualHost") && w.vhost == nil {
				w.vhost = &VHost{Location: at, Addrs: s.Args}
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
	arg := func() string {
		if len(s.Args) > 0 {
			return s.Args[0]
		}
		return ""
	}
	name := strings.ToLower(s.Name)
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
		if w.vhost == nil && globalScope(stack) && !strings.ContainsAny(target, "*?[") {
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
		case w.vhost == nil && globalScope(stack):
			w.cfg.Global, w.cfg.GlobalAt = v, at
		}
	case "sslstaplingcache":
		if w.vhost == nil {
			w.cfg.StaplingCache = arg()
		}
	case "sslstaplingrespondertimeout":
		if n, err := strconv.Atoi(arg()); err == nil && n > 0 && w.vhost == nil {
			w.cfg.ResponderTimeout = n
		}
	case "sslocspproxyurl":
		if w.vhost == nil {
			w.cfg.OCSPProxyURL = arg()
		}
	}
	// Ownership is cPanel's marker wherever the template puts it in the vhost (inside
	// <IfModule suexec_module><IfModule !mod_ruid2.c>, or mod_ruid2's RUidGid): which module
	// is loaded changes how the account's code runs, not whose vhost it is.
	if w.vhost != nil && (name == "suexecusergroup" || name == "ruidgid") && arg() != "" {
		w.vhost.Account = arg()
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

// vhostScope: directly in the <VirtualHost>, through transparent containers only.
func vhostScope(stack []stmt) bool {
	seen := false
	for _, c := range stack {
		switch {
		case strings.EqualFold(c.Name, "VirtualHost"):
			seen = true
		case !transparent(c):
			return false
		}
	}
	return seen
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
			matches = append(matches, Unroot(w.l.Root, p))
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
