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

// Where mod_info is loaded Ask also reads DUMP_CONFIG, and the comparison finds what only it
// shows: a directive Apache applies that the reading does not (or elsewhere), a file Apache
// read that the agent did not, and Defines that differ. A <VirtualHost> line continued over
// two lines is where -S and DUMP_CONFIG say (its last line) for both.
func TestAskDumpConfig(t *testing.T) {
	httpd := "LoadModule info_module modules/mod_info.so\nDefine SITE on\nErrorLog logs/error_log\n" +
		"<VirtualHost \\\n 127.0.0.1:443>\nServerName a.example\nSSLUseStapling ${SITE}\n</VirtualHost>\nSSLUseStapling Off\n"
	l := ea4Tree(t, map[string]string{"/etc/apache2/conf/httpd.conf": httpd, "/usr/sbin/httpd": ""})
	l.HTTPD = "/usr/sbin/httpd"
	root := l.Root
	conf := root + "/etc/apache2/conf/httpd.conf"
	dumpOut := "# In file: " + conf + "\n#   3:\nErrorLog logs/error_log\n#   5:\n<VirtualHost 127.0.0.1:443>\n  #   6:\n  ServerName a.example\n" +
		"  #   7:\n  SSLUseStapling on\n</VirtualHost>\n#   9:\nSSLUseStapling Off\n"
	answers := cannedHTTPD{
		"-v": "Server version: Apache/2.4.62 (cPanel)\n",
		"-l": "Compiled in modules:\n  core.c\n  mod_so.c\n  http_core.c\n",
		"-M": "Loaded Modules:\n core_module (static)\n so_module (static)\n http_module (static)\n info_module (shared)\n",
		"-S": "VirtualHost configuration:\n127.0.0.1:443          a.example (" + conf + ":5)\nMain ErrorLog: \"" + root + "/etc/apache2/logs/error_log\"\n" +
			"Define: DUMP_VHOSTS\nDefine: DUMP_RUN_CFG\nDefine: SITE=on\n",
		"DUMP_CONFIG": dumpOut,
	}
	a, err := Ask(context.Background(), answers, l)
	if err != nil {
		t.Fatal(err)
	}
	if a.Dump == nil || len(a.Dump.Directives) != 3 || strings.Join(a.Defines, " ") != "SITE=on" {
		t.Fatalf("answers %+v, dump %+v", a, a.Dump)
	}
	l.Answers = a
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Disagreement(a, l.ErrorLog); d != "" {
		t.Fatalf("agreeing reading reported a disagreement: %s", d)
	}
	for _, tc := range []struct{ name, dump, defines, want string }{
		{"a directive the reading missed", strings.Replace(dumpOut, "#   9:\nSSLUseStapling Off\n", "#   9:\nSSLUseStapling Off\n#  10:\nSSLUseStapling on\n", 1), "",
			`directive 4 is /etc/apache2/conf/httpd.conf:10 sslusestapling ["on"] (global) in Apache's reading, nothing in the agent's`},
		{"another value", strings.Replace(dumpOut, "  SSLUseStapling on", "  SSLUseStapling off", 1), "",
			`directive 2 is /etc/apache2/conf/httpd.conf:7 sslusestapling ["off"] (<VirtualHost> at /etc/apache2/conf/httpd.conf:5) in Apache's reading, /etc/apache2/conf/httpd.conf:7 sslusestapling ["on"] (<VirtualHost> at /etc/apache2/conf/httpd.conf:5) in the agent's`},
		{"a file the reading missed", dumpOut + "# In file: " + root + "/etc/apache2/conf.d/hidden.conf\n#   1:\nServerAdmin x@example.invalid\n", "",
			"Apache read [/etc/apache2/conf.d/hidden.conf], which the agent did not"},
		{"defines", dumpOut, "Define: SITE=off\n", "defines: Apache [SITE=off], the agent read [SITE=on]"},
	} {
		b := *a
		b.Dump = nil
		b.Defines = []string{"SITE=on"}
		if tc.defines != "" {
			b.Defines = []string{strings.TrimSpace(strings.TrimPrefix(tc.defines, "Define: "))}
		}
		p := newDumpParser(root)
		for _, line := range strings.Split(tc.dump, "\n") {
			p.add([]byte(line))
		}
		b.Dump = &p.d
		if d := c.Disagreement(&b, l.ErrorLog); !strings.Contains(d, tc.want) {
			t.Errorf("%s: disagreement %q lacks %q", tc.name, d, tc.want)
		}
	}
	// Without mod_info, DUMP_CONFIG is not asked for.
	noInfo := cannedHTTPD{}
	for k, v := range answers {
		noInfo[k] = v
	}
	noInfo["-M"] = strings.Replace(answers["-M"], " info_module (shared)\n", "", 1)
	noInfo["DUMP_CONFIG"] = "this must not be read"
	if a, err := Ask(context.Background(), noInfo, l); err != nil || a.Dump != nil {
		t.Fatalf("without mod_info: %+v, %v", a, err)
	}
}
