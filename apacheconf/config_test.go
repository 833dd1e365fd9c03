package apacheconf

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const incPath = "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"

func ea4Tree(t *testing.T, files map[string]string) *Layout {
	t.Helper()
	root := t.TempDir()
	files["/etc/cpanel/ea4/is_ea4"] = ""
	writeTree(t, root, files)
	l, err := Detect(root)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestReadConfigIncludesAndScopes(t *testing.T) {
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf": `ServerRoot "/etc/apache2"
LoadModule ssl_module modules/mod_ssl.so
<IfModule ssl_module>
  SSLUseStapling On
  SSLStaplingCache shmcb:/run/apache2/stapling_cache_shmcb(256000)
</IfModule>
IncludeOptional "conf.d/*.conf"
Include '/etc/apache2/conf.d/includes/pre_virtualhost_global.conf'
IncludeOptional /etc/apache2/conf.d/nothing/*.conf
<VirtualHost 10.0.0.1:443>
  ServerName a.example
  SSLEngine on
  SSLCertificateFile /var/cpanel/ssl/a/combined
  Include /etc/apache2/conf.d/userdata/ssl/2_4/a/a.example/*.conf
</VirtualHost>
<VirtualHost 10.0.0.1:443>
  ServerName b.example
  SSLEngine on
  SSLCertificateFile ssl/b.crt
  <Directory /home/b>
    SSLUseStapling on
  </Directory>
</VirtualHost>
<VirtualHost 10.0.0.1:80>
  ServerName c.example
  SSLUseStapling on
</VirtualHost>
`,
		"/etc/apache2/conf.d/10-a.conf": "KeepAlive On\n",
		"/etc/apache2/conf.d/20-b.conf": "SSLUseStapling on\n",
		incPath:                         "SSLUseStapling off\n",
		"/etc/apache2/conf.d/userdata/ssl/2_4/a/a.example/stapling.conf": "SSLUseStapling on\n",
	})
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{"/etc/apache2/conf/httpd.conf", "/etc/apache2/conf.d/10-a.conf", "/etc/apache2/conf.d/20-b.conf",
		incPath, "/etc/apache2/conf.d/userdata/ssl/2_4/a/a.example/stapling.conf"}
	if !reflect.DeepEqual(c.Files, wantFiles) {
		t.Fatalf("Files = %v\nwant %v", c.Files, wantFiles)
	}
	if c.Global != "off" || c.GlobalAt != (Location{incPath, 1}) {
		t.Errorf("Global = %q at %v, want off at the include", c.Global, c.GlobalAt)
	}
	if c.StaplingCache == "" {
		t.Error("SSLStaplingCache not found")
	}
	if len(c.VHosts) != 3 {
		t.Fatalf("got %d vhosts", len(c.VHosts))
	}
	a, b := c.VHosts[0], c.VHosts[1]
	if !a.SSL || a.ServerName != "a.example" || a.CertFile != "/var/cpanel/ssl/a/combined" || a.Stapling != "on" ||
		a.StaplingAt.File != "/etc/apache2/conf.d/userdata/ssl/2_4/a/a.example/stapling.conf" {
		t.Errorf("vhost a = %+v", a)
	}
	// A directive inside <Directory> is not the vhost's setting; relative cert paths are
	// ServerRoot-relative.
	if b.Stapling != "" || b.CertFile != "/etc/apache2/ssl/b.crt" {
		t.Errorf("vhost b = %+v", b)
	}
	if got := c.EffectiveStapling(); got != "mixed" {
		t.Errorf("EffectiveStapling = %q, want mixed (global off, a.example turns it on)", got)
	}
	if !c.Includes(l.Root, incPath) {
		t.Error("include not seen as wired")
	}
	if c.Includes(l.Root, "/etc/apache2/conf.d/userdata/ssl/2_4/a/a.example/stapling.conf") {
		t.Error("a file included inside a vhost counts as global")
	}
}

func TestEffectiveStapling(t *testing.T) {
	ssl := func(st string) VHost { return VHost{SSL: true, Stapling: st} }
	cases := []struct {
		name   string
		global string
		vhosts []VHost
		want   Stapling
	}{
		{"apache default", "", nil, "off"},
		{"global on no vhosts", "on", nil, "on"},
		{"global on, cPanel turned one vhost off", "on", []VHost{ssl(""), ssl("off")}, "on"},
		{"global on, every vhost off", "on", []VHost{ssl("off"), ssl("off")}, "off"},
		{"global off", "off", []VHost{ssl(""), ssl("")}, "off"},
		{"global off, one on", "off", []VHost{ssl(""), ssl("on")}, "mixed"},
		{"plain http vhost on does not count", "off", []VHost{{Stapling: "on"}}, "off"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := &Config{Global: c.global, VHosts: c.vhosts}
			if got := cfg.EffectiveStapling(); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestReadConfigIncludeCycle(t *testing.T) {
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf": "Include conf.d/a.conf\n",
		"/etc/apache2/conf.d/a.conf":   "Include conf.d/b.conf\n",
		"/etc/apache2/conf.d/b.conf":   "Include /etc/apache2/conf.d/a.conf\n",
	})
	_, err := ReadConfig(l)
	if !errors.Is(err, ErrIncludeCycle) {
		t.Fatalf("err = %v, want ErrIncludeCycle", err)
	}
}

func TestReadConfigMissingHTTPDConf(t *testing.T) {
	l := ea4Tree(t, map[string]string{})
	_, err := ReadConfig(l)
	if err == nil || !strings.Contains(err.Error(), "/etc/apache2/conf/httpd.conf") {
		t.Fatalf("err = %v, want one naming httpd.conf", err)
	}
}

func TestIncludesThroughSymlinkedPath(t *testing.T) {
	// EA4 symlinks /usr/local/apache/conf/includes to the new directory; an httpd.conf that
	// names the old path still wires the same file in.
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf":    "Include /usr/local/apache/conf/includes/pre_virtualhost_global.conf\n",
		incPath:                           "",
		"/usr/local/apache/conf/includes": "->../../../../etc/apache2/conf.d/includes",
	})
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Includes(l.Root, incPath) {
		t.Fatal("the include reached through a symlinked directory is not seen as wired")
	}
}

func TestReadConfigWithOverrideOfMissingFile(t *testing.T) {
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf": "SSLUseStapling on\nIncludeOptional " + incPath + "\n",
	})
	c, err := ReadConfigWith(l, map[string][]byte{incPath: []byte("SSLUseStapling off\n")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Global != "off" || !c.Includes(l.Root, incPath) {
		t.Fatalf("override of a file that does not exist yet not read: global %q", c.Global)
	}
}

func TestIncludesNamedButMissingFile(t *testing.T) {
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf": "Include \"" + incPath + "\"\n<VirtualHost *:443>\nInclude /etc/apache2/vh.conf\n</VirtualHost>\n",
	})
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Includes(l.Root, incPath) {
		t.Fatal("a global Include line naming a missing file is not wiring")
	}
	if c.Includes(l.Root, "/etc/apache2/vh.conf") {
		t.Fatal("an Include inside a vhost counts as global")
	}
}

// FuzzReadConfig: any httpd.conf (with includes of itself and of a second file) is read
// without panicking or hanging, and the summary stays in its vocabulary.
func FuzzReadConfig(f *testing.F) {
	f.Add([]byte("SSLUseStapling on\n<VirtualHost *:443>\nSSLEngine on\nSSLUseStapling off\n</VirtualHost>\n"))
	f.Add([]byte("Include conf/httpd.conf\n"))
	f.Add([]byte("IncludeOptional conf.d/*.conf\n<IfModule x>\n<VirtualHost a>\n"))
	f.Add([]byte("</VirtualHost>\n</IfModule>\nServerRoot /x\nInclude \"conf.d/a b.conf\"\n"))
	f.Fuzz(func(t *testing.T, conf []byte) {
		root := t.TempDir()
		writeTree(t, root, map[string]string{
			"/etc/cpanel/ea4/is_ea4":       "",
			"/etc/apache2/conf/httpd.conf": string(conf),
			"/etc/apache2/conf.d/a.conf":   string(conf),
		})
		l, err := Detect(root)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ReadConfig(l)
		if err != nil {
			return
		}
		switch c.EffectiveStapling() {
		case "on", "off", "mixed":
		default:
			t.Fatalf("effective %q", c.EffectiveStapling())
		}
		for _, v := range c.VHosts {
			if v.Stapling != "" && v.Stapling != "on" && v.Stapling != "off" {
				t.Fatalf("vhost stapling %q", v.Stapling)
			}
		}
	})
}

// One file reached by two paths is one file: the plan's replacement content for the include
// applies where httpd.conf reads it through a symlinked path (cPanel's EA3-compatibility links).
func TestReadConfigWithOverridesByIdentity(t *testing.T) {
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf": "LoadModule ssl_module modules/mod_ssl.so\nSSLUseStapling On\nInclude /usr/local/apache/conf/includes/pre_virtualhost_global.conf\n",
		incPath:                        "# admin\n",
	})
	if err := os.MkdirAll(filepath.Join(l.Root, "usr/local/apache/conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(l.Root, "etc/apache2/conf.d/includes"), filepath.Join(l.Root, "usr/local/apache/conf/includes")); err != nil {
		t.Fatal(err)
	}
	c, err := ReadConfigWith(l, map[string][]byte{incPath: []byte("SSLUseStapling off\n")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Global != "off" || !c.Includes(l.Root, incPath) {
		t.Fatalf("global %q, includes %v: the replacement was not applied through the alias", c.Global, c.Includes(l.Root, incPath))
	}
}

// `Define A ${A}${A}` doubles a value each time; sixty of them must not exhaust memory.
func TestDefineExpansionIsBounded(t *testing.T) {
	conf := "Define A xxxxxxxx\n" + strings.Repeat("Define A ${A}${A}\n", 60) + "ErrorLog logs/${A}\n"
	l := ea4Tree(t, map[string]string{"/etc/apache2/conf/httpd.conf": conf})
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ErrorLog) > 2*maxExpanded {
		t.Fatalf("ErrorLog of %d bytes", len(c.ErrorLog))
	}
}
