package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// nginxTFiles runs `nginx -T` and returns the files it printed, in order.
func nginxTFiles(t *testing.T, prefix, conf string) []string {
	t.Helper()
	out, err := exec.Command(nginxBin, "-T", "-p", prefix+"/", "-c", conf, "-e", filepath.Join(prefix, "startup.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -T: %v\n%s", err, out)
	}
	var files []string
	for _, m := range regexp.MustCompile(`(?m)^# configuration file (.*):$`).FindAllStringSubmatch(string(out), -1) {
		files = append(files, m[1])
	}
	return files
}

// TestNginxConfigAgainstNginx reads a layout like ea-nginx's (conf.d/*.conf, server-includes,
// users/USER/*.conf, a dot file, relative and absolute includes, quoting and comments) and
// compares the files read with `nginx -T`, and the stapling values with what nginx does.
func TestNginxConfigAgainstNginx(t *testing.T) {
	needNginx(t)
	dir := t.TempDir()
	ca := newCA(t)
	certA, keyA := ca.leaf(t, dir, "a.test", 21, "http://127.0.0.1:9/")
	certB, keyB := ca.leaf(t, dir, "b.test", 22, "http://127.0.0.1:9/")
	files := map[string]string{
		"nginx.conf": nginxPrefixConf(dir) + `http {
` + fmt.Sprintf(nginxTempPaths, dir) + `
    ssl_stapling on;   # cPanel's templates set none; an admin's global switch
    resolver 127.0.0.1 valid=30s;
    include conf.d/*.conf;
    include "` + dir + `/extra/abs.conf";
}
`,
		"conf.d/00-globals.conf": "# nothing but a comment ; { }\nssl_stapling_verify on;\n",
		"conf.d/a.conf": `server {
    listen 127.0.0.1:18443 ssl;
    server_name a.test www.a.test;
    ssl_certificate "` + certA + `";
    ssl_certificate_key '` + keyA + `';
    include conf.d/server-includes/*.conf;
}
`,
		"conf.d/server-includes/x.conf":       "location /x { return 204; }\n",
		"conf.d/server-includes/.hidden.conf": "this is not nginx syntax and must not be read\n",
		"conf.d/users.conf":                   "include conf.d/users/*/*.conf;\n",
		"conf.d/users/bob/b.test.conf": `server {
    listen 127.0.0.1:18444 ssl;
    server_name b.test;
    ssl_certificate ` + certB + `;
    ssl_certificate_key ` + keyB + `;
    ssl_stapling off;
    resolver 127.0.0.2;
}
`,
		"conf.d/users/alice/z.conf": "server { listen 127.0.0.1:18080; server_name plain.test; }\n",
		"conf.d/readme.txt":         "not matched by *.conf\n",
		"extra/abs.conf":            "server { listen 127.0.0.1:18445 ssl; server_name \"c.test\"; ssl_certificate " + certA + "; ssl_certificate_key " + keyA + "; ssl_stapling 'OFF'; }\n",
	}
	writeFiles(t, dir, files)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	cfg, err := ReadNginxConfig(context.Background(), "/", conf)
	if err != nil {
		t.Fatal(err)
	}
	if want := nginxTFiles(t, dir, conf); !slices.Equal(cfg.Files, want) {
		t.Errorf("files read:\n got %q\nwant %q (nginx -T)", cfg.Files, want)
	}
	byName := map[string]NginxServer{}
	for _, s := range cfg.Servers {
		byName[s.Names[0]] = s
	}
	a, b, c, plain := byName["a.test"], byName["b.test"], byName["c.test"], byName["plain.test"]
	if !a.Stapling || !a.StaplingVerify || !a.SSL || !slices.Equal(a.Resolver, []string{"127.0.0.1", "valid=30s"}) || !slices.Equal(a.Certificates, []string{certA}) {
		t.Errorf("a.test (inherits http's stapling, verify and resolver): %+v", a)
	}
	if !strings.HasSuffix(a.StaplingAt, "nginx.conf:"+fmt.Sprint(strings.Count(strings.Split(files["nginx.conf"], "ssl_stapling on")[0], "\n")+1)) {
		t.Errorf("a.test stapling_at %q", a.StaplingAt)
	}
	if b.Stapling || !b.StaplingVerify || !slices.Equal(b.Resolver, []string{"127.0.0.2"}) {
		t.Errorf("b.test (own off, own resolver): %+v", b)
	}
	if c.Stapling || c.Names[0] != "c.test" {
		t.Errorf("c.test ('OFF' quoted, any case): %+v", c)
	}
	if plain.SSL || !plain.Stapling {
		t.Errorf("plain.test: ssl %v (no ssl listen), stapling %v (inherited, though without TLS it does nothing)", plain.SSL, plain.Stapling)
	}
	if a.File != filepath.Join(dir, "conf.d/a.conf") || a.Line != 1 {
		t.Errorf("a.test at %s:%d", a.File, a.Line)
	}
}

// TestNginxTokenizer covers ngx_conf_read_token's rules; where nginx refuses, so do we.
func TestNginxTokenizer(t *testing.T) {
	cases := []struct {
		name, in string
		want     [][]string
		err      bool
	}{
		{"plain", "a b;c;", [][]string{{"a", "b"}, {"c"}}, false},
		{"comment at word start", "a #b;\n c;", [][]string{{"a", "c"}}, false},
		{"hash inside word", "a b#c;", [][]string{{"a", "b#c"}}, false},
		{"quotes", `a "b c" 'd;e';`, [][]string{{"a", "b c", "d;e"}}, false},
		{"escapes", `a "x\"y\\z\tq" b\ c;`, [][]string{{"a", "x\"y\\z\tq", "b\\ c"}}, false},
		{"variable brace", "set $a ${b}c;", [][]string{{"set", "$a", "${b}c"}}, false},
		{"brace in word", "a b}c;", [][]string{{"a", "b}c"}}, false},
		{"quote needs space", `a "b"c;`, nil, true},
		{"eof in directive", "a b", nil, true},
		{"stray semicolon", ";", nil, true},
		{"close paren after quote", `if ($a = "b") { }`, [][]string{{"if", "($a", "=", "b", ")"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tk := &tokenizer{data: []byte(c.in), file: "x", line: 1}
			var got [][]string
			for {
				args, _, end, err := tk.next()
				if err != nil {
					if !c.err {
						t.Fatalf("error %v", err)
					}
					if !errors.Is(err, ErrNginxSyntax) {
						t.Errorf("error %v does not wrap ErrNginxSyntax", err)
					}
					return
				}
				if end == endEOF {
					break
				}
				if args != nil {
					got = append(got, args)
				}
			}
			if c.err {
				t.Fatalf("no error, got %q", got)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestNginxConfigErrors(t *testing.T) {
	cases := map[string]string{
		"duplicate":      "http { server { ssl_stapling on; ssl_stapling off; } }",
		"bad flag":       "http { ssl_stapling yes; }",
		"missing":        "http { include missing.conf; }",
		"unclosed block": "http { server {",
		"stray brace":    "}",
	}
	for name, conf := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"nginx.conf": conf})
			if _, err := ReadNginxConfig(context.Background(), dir, "/nginx.conf"); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// Under a fake root, host paths resolve inside it, and a FIFO is refused rather than read.
func TestNginxConfigUnderRoot(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"etc/nginx/nginx.conf":            "events {}\nhttp { include /etc/nginx/conf.d/*.conf; }\n",
		"etc/nginx/conf.d/ea-nginx.conf":  "ssl_stapling on;\n",
		"etc/nginx/conf.d/users/bob.conf": "not included: not matched by conf.d/*.conf",
		"etc/nginx/conf.d/server.conf":    "server { listen 443 ssl; server_name s.test; }\n",
	})
	cfg, err := ReadNginxConfig(context.Background(), root, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/etc/nginx/nginx.conf", "/etc/nginx/conf.d/ea-nginx.conf", "/etc/nginx/conf.d/server.conf"}
	if !slices.Equal(cfg.Files, want) || len(cfg.Servers) != 1 || !cfg.Servers[0].Stapling {
		t.Errorf("files %q servers %+v", cfg.Files, cfg.Servers)
	}
	fifo := filepath.Join(root, "etc/nginx/conf.d/zz.conf")
	if err := mkfifo(fifo); err != nil {
		t.Skip(err)
	}
	if _, err := ReadNginxConfig(context.Background(), root, ""); err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("FIFO include: %v", err)
	}
}
