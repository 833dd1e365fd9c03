package apacheconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// The per-vhost exemption: a file of ours in a vhost's cPanel userdata include directory that
// turns stapling back on for that vhost alone, while the managed block in the pre-VirtualHost
// include turns it off for the rest. cPanel's SSL vhost template includes
// `<dir_conf_userdata>/ssl/2_4/USER/DOMAIN/*.conf` inside the <VirtualHost> (FACTS.md section
// 4: such a file CAN turn stapling back on, and a vhost's own `SSLUseStapling on` beats the
// global off), and writes that Include line uncommented only for directories that existed at
// the last rebuildhttpdconf, as it does for the pre-VirtualHost include.
const (
	// ExemptFileName is our file's name in the userdata directory: it ends in .conf so the
	// template's `*.conf` glob reads it, and names the tool so an admin listing the directory
	// knows whose it is.
	ExemptFileName = "stapling-agent-must-staple.conf"
	// exemptBody is the whole file, always exactly these bytes: revert removes a file only
	// when it still holds them, so an admin's edit is never thrown away.
	exemptBody = "# BEGIN stapling-agent: OCSP stapling kept on for this vhost, which serves a Must-Staple certificate (remove with: stapling-agent revert)\n" +
		"<IfModule ssl_module>\n" +
		"    SSLUseStapling on\n" +
		"</IfModule>\n" +
		"# END stapling-agent\n"
	// wildcardSafe is how cPanel spells a wildcard ServerName's "*." in the userdata path
	// (Cpanel::WildcardDomain::encode_wildcard_domain): *.wild.test is wildcard_safe.wild.test.
	wildcardSafe = "wildcard_safe."
)

// ExemptContent is the exact content of a per-vhost exemption file.
func ExemptContent() []byte { return []byte(exemptBody) }

// IsExemptContent reports whether content is exactly our exemption file: anything else (an
// admin's edit, an admin's own file that happens to carry our name) is not ours to remove.
func IsExemptContent(content []byte) bool { return bytes.Equal(content, []byte(exemptBody)) }

// UserdataDir is the host's dir_conf_userdata: on EA4 the userdata directory beside the
// includes directory (both are under dir_conf, /etc/apache2/conf.d; paths.conf's
// dir_conf_includes moves both), on EA3 /usr/local/apache/conf/userdata.
func UserdataDir(l *Layout) string {
	if l.Kind == KindEA3 {
		return "/usr/local/apache/conf/userdata"
	}
	return path.Join(path.Dir(path.Dir(l.Include)), "userdata")
}

// ExemptPath is the host path of the exemption file for v, an SSL vhost of c, and whether the
// vhost reads that directory now (an uncommented Include/IncludeOptional in it whose pattern
// matches the file). Only the vhost's own directory will do, `<userdata>/ssl/{2_4,2}/USER/NAME`
// with USER its account and NAME one of its names as cPanel encodes them: cPanel's template
// also includes shared directories first (`ssl/*.conf`, `ssl/2_4/*.conf`,
// `ssl/2_4/USER/*.conf`), and a file there would keep stapling on for every vhost that reads
// them. Without such an include it is cPanel's path from the account and ServerName, under
// the first of ssl/2_4 and ssl/2 that exists (as the template chooses; ssl/2_4 when neither
// does), which rebuildhttpdconf wires once the directory exists (EA4 only: on EA3 there is no
// rebuild, and the error says so).
func ExemptPath(l *Layout, c *Config, v VHost) (hostPath string, wired bool, err error) {
	if v.Account == "" {
		return "", false, errors.New("it belongs to no cPanel account, so it has no userdata include directory")
	}
	ud := UserdataDir(l)
	names := map[string]bool{}
	for _, n := range append([]string{v.ServerName}, v.Aliases...) {
		names[encodeName(n)] = true
	}
	own := func(dir string) bool {
		rel, ok := strings.CutPrefix(dir, ud+"/")
		parts := strings.Split(rel, "/")
		return ok && len(parts) == 4 && parts[0] == "ssl" && (parts[1] == "2_4" || parts[1] == "2") &&
			parts[2] == v.Account && names[parts[3]]
	}
	for _, d := range c.Trace {
		if d.VHost == nil || *d.VHost != v.Location || len(d.Args) == 0 {
			continue
		}
		if n := strings.ToLower(d.Name); n != "include" && n != "includeoptional" {
			continue
		}
		pat := d.Args[0]
		if !path.IsAbs(pat) {
			pat = path.Join(l.ServerRoot, pat)
		}
		pat = path.Clean(pat)
		dir := path.Dir(pat)
		if !own(dir) {
			continue
		}
		if ok, _ := path.Match(path.Base(pat), ExemptFileName); ok {
			return path.Join(dir, ExemptFileName), true, nil
		}
	}
	if l.Kind == KindEA3 {
		return "", false, errors.New("it has no userdata include of its own (EA3: add one by hand, there is no rebuildhttpdconf)")
	}
	domain := encodeName(v.ServerName)
	if !safeName(v.Account) || !safeName(domain) {
		return "", false, fmt.Errorf("its account %q or ServerName %q cannot name a userdata directory", v.Account, v.ServerName)
	}
	version := "2_4"
	if !isDir(l.Path(path.Join(ud, "ssl", "2_4"))) && isDir(l.Path(path.Join(ud, "ssl", "2"))) {
		version = "2" // a host converted from EA3 that still keeps its userdata there
	}
	return path.Join(ud, "ssl", version, v.Account, domain, ExemptFileName), false, nil
}

// encodeName is a vhost name as cPanel spells it in a userdata path: lower case, no port, a
// wildcard's "*." as "wildcard_safe.".
func encodeName(n string) string {
	n, _, _ = strings.Cut(strings.ToLower(n), ":")
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		n = wildcardSafe + rest
	}
	return n
}

func isDir(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.IsDir()
}

// safeName: one path component, nothing a glob or a parent reference could widen.
func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\*?[] \t\x00")
}

// ExemptFiles lists the host paths of every exemption file on the host: those in cPanel's
// userdata tree (any Apache version directory) and those c reads (a vhost's include outside
// it), sorted. Their contents are not checked here.
func ExemptFiles(l *Layout, c *Config) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	m, err := filepath.Glob(l.Path(path.Join(UserdataDir(l), "ssl", "*", "*", "*", ExemptFileName)))
	if err != nil {
		return nil, err
	}
	for _, p := range m {
		add(Unroot(l.Root, p))
	}
	if c != nil {
		for _, f := range c.Files {
			if path.Base(f) == ExemptFileName {
				add(f)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// MkdirNew creates hostDir (and missing parents, mode 0755 as cPanel makes userdata
// directories) under root, refusing a symlink on the way, and returns the host paths of the
// directories it created, deepest last.
func MkdirNew(root, hostDir string) ([]string, error) {
	if err := NoSymlinkBelow(root, HostPath(root, hostDir)); err != nil {
		return nil, err
	}
	var missing []string
	for d := path.Clean(hostDir); d != "/" && d != "."; d = path.Dir(d) {
		if _, err := os.Lstat(HostPath(root, d)); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("stat %s: %w", d, err)
		}
		missing = append([]string{d}, missing...)
	}
	for i, d := range missing {
		if err := os.Mkdir(HostPath(root, d), 0o755); err != nil {
			return missing[:i], fmt.Errorf("create %s: %w", d, err)
		}
	}
	return missing, nil
}

// RemoveCompared removes the snapshot's file if it still holds the snapshot's bytes (ErrChanged
// otherwise, nothing removed), then fsyncs the directory. A missing file is already removed.
func (s *FileSnapshot) RemoveCompared() error {
	if !s.Exists {
		return nil
	}
	if !s.unchanged() {
		return fmt.Errorf("%s %w", s.Path, ErrChanged)
	}
	if err := os.Remove(s.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.Path, err)
	}
	return syncDir(filepath.Dir(s.Path))
}
