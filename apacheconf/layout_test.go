package apacheconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree creates files (host path -> content) under root, like node_exporter's
// buildFakeSysfs. A content of "->target" makes a symlink instead.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDetect(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  Layout
		junk  int
	}{
		{
			name:  "ea4 defaults without paths.conf",
			files: map[string]string{"/etc/cpanel/ea4/is_ea4": ""},
			want: Layout{Kind: KindEA4, ServerRoot: "/etc/apache2", HTTPDConf: "/etc/apache2/conf/httpd.conf",
				Include: "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf", ErrorLog: "/etc/apache2/logs/error_log",
				HTTPD: "/usr/sbin/httpd", Apachectl: "/usr/sbin/apachectl",
				Restart: "/usr/local/cpanel/scripts/restartsrv_httpd", Rebuild: "/usr/local/cpanel/scripts/rebuildhttpdconf"},
		},
		{
			name: "ea4 paths.conf with junk lines and spaces",
			files: map[string]string{
				"/etc/cpanel/ea4/is_ea4": "",
				"/etc/cpanel/ea4/paths.conf": "# comment\nfile_conf = /opt/a/httpd.conf\n" +
					"dir_conf_includes=/opt/a/inc/\ngarbage line\nbin_apachectl=relative/path\n=x\nfile_error_log= /logs/err\n",
				"/scripts/restartsrv_httpd": "#!/bin/sh\n",
			},
			junk: 3,
			want: Layout{Kind: KindEA4, ServerRoot: "/etc/apache2", HTTPDConf: "/opt/a/httpd.conf",
				Include: "/opt/a/inc/pre_virtualhost_global.conf", ErrorLog: "/logs/err",
				HTTPD: "/usr/sbin/httpd", Apachectl: "/usr/sbin/apachectl",
				Restart: "/scripts/restartsrv_httpd", Rebuild: "/usr/local/cpanel/scripts/rebuildhttpdconf"},
		},
		{
			name: "ea3",
			files: map[string]string{
				"/usr/local/apache/conf/httpd.conf":          "",
				"/usr/local/cpanel/scripts/restartsrv_httpd": "",
				"/scripts/restartsrv_httpd":                  "",
			},
			want: Layout{Kind: KindEA3, ServerRoot: "/usr/local/apache", HTTPDConf: "/usr/local/apache/conf/httpd.conf",
				Include: "/usr/local/apache/conf/includes/pre_virtualhost_global.conf", ErrorLog: "/usr/local/apache/logs/error_log",
				HTTPD: "/usr/local/apache/bin/httpd", Apachectl: "/usr/local/apache/bin/apachectl",
				Restart: "/usr/local/cpanel/scripts/restartsrv_httpd"},
		},
		{
			// EA4 keeps /usr/local/apache symlinks; is_ea4 decides.
			name: "ea4 with legacy ea3 paths present",
			files: map[string]string{
				"/etc/cpanel/ea4/is_ea4":            "",
				"/usr/local/apache/conf/httpd.conf": "",
			},
			want: Layout{Kind: KindEA4, ServerRoot: "/etc/apache2", HTTPDConf: "/etc/apache2/conf/httpd.conf",
				Include: "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf", ErrorLog: "/etc/apache2/logs/error_log",
				HTTPD: "/usr/sbin/httpd", Apachectl: "/usr/sbin/apachectl",
				Restart: "/usr/local/cpanel/scripts/restartsrv_httpd", Rebuild: "/usr/local/cpanel/scripts/rebuildhttpdconf"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, c.files)
			got, err := Detect(root)
			if err != nil {
				t.Fatal(err)
			}
			c.want.Root = root
			c.want.PathsConfJunk = c.junk
			if *got != c.want {
				t.Fatalf("Detect:\n got %+v\nwant %+v", *got, c.want)
			}
		})
	}
}

func TestDetectUnknownCreatesNothing(t *testing.T) {
	root := t.TempDir()
	_, err := Detect(root)
	if !errors.Is(err, ErrUnknownLayout) {
		t.Fatalf("err = %v, want ErrUnknownLayout", err)
	}
	for _, want := range []string{ea4FlagFile, ea3HTTPDConf} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say it looked for %s", err, want)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("Detect created %v", entries)
	}
}

func TestHostPath(t *testing.T) {
	for _, c := range []struct{ root, p, want string }{
		{"/", "/etc/x", "/etc/x"},
		{"", "/etc/x", "/etc/x"},
		{"/tmp/r", "/etc/x", "/tmp/r/etc/x"},
		{"/tmp/r", "rel/x", "rel/x"},
	} {
		if got := HostPath(c.root, c.p); got != c.want {
			t.Errorf("HostPath(%q, %q) = %q, want %q", c.root, c.p, got, c.want)
		}
	}
}
