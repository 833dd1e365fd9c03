package apacheconf

import (
	"context"
	"strings"
	"testing"
)

// cannedHTTPD answers Ask's questions as Debian's apache2 does.
type cannedHTTPD map[string]string

func (c cannedHTTPD) Run(_ context.Context, argv []string) ([]byte, error) {
	return []byte(c[argv[len(argv)-1]]), nil
}

func TestAskAndDisagreement(t *testing.T) {
	l := ea4Tree(t, map[string]string{
		"/etc/apache2/conf/httpd.conf": "LoadModule ssl_module modules/mod_ssl.so\nErrorLog logs/error_log\n" +
			"<VirtualHost 127.0.0.1:443>\nServerName a.example\n</VirtualHost>\n<VirtualHost 127.0.0.1:443>\nServerName b.example\n</VirtualHost>\n",
		"/usr/sbin/httpd": "",
	})
	l.HTTPD = "/usr/sbin/httpd"
	root := l.Root
	answers := cannedHTTPD{
		"-v": "Server version: Apache/2.4.62 (cPanel)\nServer built:   today\n",
		"-l": "Compiled in modules:\n  core.c\n  mod_so.c\n  http_core.c\n",
		"-M": "Loaded Modules:\n core_module (static)\n so_module (static)\n http_module (static)\n ssl_module (shared)\n",
		"-S": "VirtualHost configuration:\n127.0.0.1:443          is a NameVirtualHost\n         default server a.example (" + root + "/etc/apache2/conf/httpd.conf:3)\n" +
			"         port 443 namevhost a.example (" + root + "/etc/apache2/conf/httpd.conf:3)\n         port 443 namevhost b.example (" + root + "/etc/apache2/conf/httpd.conf:6)\n" +
			"ServerRoot: \"" + root + "/etc/apache2\"\nMain ErrorLog: \"" + root + "/etc/apache2/logs/error_log\"\nDefine: DUMP_VHOSTS\n",
	}
	a, err := Ask(context.Background(), answers, l)
	if err != nil {
		t.Fatal(err)
	}
	if a.Apache.Version != "2.4.62" || len(a.Apache.Builtin) != 3 || strings.Join(a.Loaded, " ") != "core_module http_module so_module ssl_module" ||
		len(a.VHosts) != 2 || a.VHosts[1] != (Location{"/etc/apache2/conf/httpd.conf", 6}) || a.ErrorLog != "/etc/apache2/logs/error_log" {
		t.Fatalf("answers %+v", a)
	}
	l.Answers = a
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Disagreement(a, l.ErrorLog); d != "" {
		t.Fatalf("agreeing reading reported a disagreement: %s", d)
	}
	// Apache loads a module the reading missed, has a vhost it missed, writes another log.
	a.Loaded = append(a.Loaded, "rewrite_module")
	a.VHosts = append(a.VHosts, Location{"/etc/apache2/conf.d/x.conf", 1})
	a.ErrorLog = "/var/log/elsewhere"
	d := c.Disagreement(a, l.ErrorLog)
	for _, want := range []string{"loaded modules", "rewrite_module", "vhosts: Apache has 3, the agent read 2", "/etc/apache2/conf.d/x.conf:1", "main ErrorLog: Apache /var/log/elsewhere"} {
		if !strings.Contains(d, want) {
			t.Errorf("disagreement lacks %q: %s", want, d)
		}
	}
	// An httpd that does not answer as Apache does is not asked further.
	if _, err := Ask(context.Background(), cannedHTTPD{"-v": "nonsense"}, l); err == nil {
		t.Fatal("no error for an answer without a version")
	}
}
