// Package apacheconf knows how a cPanel host lays out Apache: where EasyApache 4 or 3 keeps
// httpd.conf, the pre-VirtualHost include and error_log, how to edit that include safely, how to
// read the effective configuration, and how to run the config test, rebuild and restart.
//
// Every host path is resolved under a root directory (Layout.Root), the way node_exporter
// resolves /proc and /sys under --path.rootfs, so tests and rescue audits can point the agent
// at a tree that looks like a cPanel host.
package apacheconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Kind names the EasyApache generation of a host.
type Kind string

const (
	KindEA4     Kind = "ea4"
	KindEA3     Kind = "ea3"
	KindUnknown Kind = "unknown"
)

// Host paths cPanel uses (FACTS.md section 5). All are absolute host paths, resolved under
// Layout.Root before use.
const (
	ea4FlagFile  = "/etc/cpanel/ea4/is_ea4"
	ea4PathsConf = "/etc/cpanel/ea4/paths.conf"
	ea3HTTPDConf = "/usr/local/apache/conf/httpd.conf"

	// IncludeName is the pre-VirtualHost include for "All Versions". The _2.conf variant is
	// version-specific and overwritten on Apache updates, so we never use it.
	IncludeName = "pre_virtualhost_global.conf"

	restartPrimary  = "/usr/local/cpanel/scripts/restartsrv_httpd"
	restartFallback = "/scripts/restartsrv_httpd"
	rebuildScript   = "/usr/local/cpanel/scripts/rebuildhttpdconf"
)

// ErrUnknownLayout means neither an EA4 nor an EA3 Apache was found under the root.
var ErrUnknownLayout = errors.New("no cPanel Apache layout found")

// Layout is where a host's Apache lives. Paths are host paths (as Apache and cPanel see them);
// use Path to reach them under Root.
type Layout struct {
	Root       string // directory every host path is resolved under; "/" on a real host
	Kind       Kind
	ServerRoot string
	HTTPDConf  string
	Include    string // the pre-VirtualHost include we edit
	ErrorLog   string
	HTTPD      string
	Apachectl  string
	Restart    string // restartsrv_httpd that exists, primary location preferred
	Rebuild    string // rebuildhttpdconf; empty on EA3
	// PathsConfJunk counts lines of paths.conf that were not key=value; reported, not fatal.
	PathsConfJunk int
	// Answers is what httpd said when it was asked (Ask): its compiled-in modules and version
	// drive the walker's <IfModule> and <IfVersion>, the rest is checked against its reading.
	// nil: not asked, DefaultApache.
	Answers *Answers
}

// Path returns hostPath resolved under the layout's root.
func (l *Layout) Path(hostPath string) string {
	return HostPath(l.Root, hostPath)
}

// HostPath resolves an absolute host path under root. Relative paths are returned unchanged.
func HostPath(root, hostPath string) string {
	if root == "" || root == "/" || !path.IsAbs(hostPath) {
		return hostPath
	}
	return filepath.Join(root, hostPath)
}

// ea4Defaults are EA4's paths when paths.conf is absent or silent (ea-apache2-config).
var ea4Defaults = map[string]string{
	"dir_base":          "/etc/apache2",
	"file_conf":         "/etc/apache2/conf/httpd.conf",
	"dir_conf_includes": "/etc/apache2/conf.d/includes",
	"file_error_log":    "/etc/apache2/logs/error_log",
	"bin_httpd":         "/usr/sbin/httpd",
	"bin_apachectl":     "/usr/sbin/apachectl",
}

// Detect finds the host's layout under root. It only reads. An unknown layout returns an
// error wrapping ErrUnknownLayout that says what was looked for.
func Detect(root string) (*Layout, error) {
	if root == "" {
		root = "/"
	}
	l := &Layout{Root: root, Kind: KindUnknown}
	switch {
	case exists(l.Path(ea4FlagFile)):
		l.Kind = KindEA4
		p := make(map[string]string, len(ea4Defaults))
		for k, v := range ea4Defaults {
			p[k] = v
		}
		if err := l.readPathsConf(p); err != nil {
			return nil, err
		}
		l.ServerRoot = p["dir_base"]
		l.HTTPDConf = p["file_conf"]
		l.Include = path.Join(p["dir_conf_includes"], IncludeName)
		l.ErrorLog = p["file_error_log"]
		l.HTTPD = p["bin_httpd"]
		l.Apachectl = p["bin_apachectl"]
		l.Rebuild = rebuildScript
	case exists(l.Path(ea3HTTPDConf)):
		l.Kind = KindEA3
		l.ServerRoot = "/usr/local/apache"
		l.HTTPDConf = ea3HTTPDConf
		l.Include = "/usr/local/apache/conf/includes/" + IncludeName
		l.ErrorLog = "/usr/local/apache/logs/error_log"
		l.HTTPD = "/usr/local/apache/bin/httpd"
		l.Apachectl = "/usr/local/apache/bin/apachectl"
	default:
		return nil, fmt.Errorf("%w under %s: looked for %s (EA4) and %s (EA3)",
			ErrUnknownLayout, root, ea4FlagFile, ea3HTTPDConf)
	}
	l.Restart = restartPrimary
	if !exists(l.Path(restartPrimary)) && exists(l.Path(restartFallback)) {
		l.Restart = restartFallback
	}
	return l, nil
}

// readPathsConf overlays /etc/cpanel/ea4/paths.conf onto p. The file is optional; lines that
// are not key=value (or are comments) are counted in PathsConfJunk and otherwise ignored, since
// a stray line in a cPanel-managed file must not stop the agent.
func (l *Layout) readPathsConf(p map[string]string) error {
	data, err := ReadFile(l.Path(ea4PathsConf), MaxSmallFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", ea4PathsConf, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 64*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" || !path.IsAbs(v) {
			l.PathsConfJunk++
			continue
		}
		p[k] = path.Clean(v)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", ea4PathsConf, err)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
