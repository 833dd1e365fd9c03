package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/testguard"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

func TestMain(m *testing.M) { os.Exit(testguard.Main(m)) }

// The generated host holds cPanel's vhost shapes, the agent reads each as written, and
// Debian's apache2 (where installed) accepts the config.
func TestGenhostShapes(t *testing.T) {
	*root, *accounts = t.TempDir(), 30
	if err := run(); err != nil {
		t.Fatal(err)
	}
	l, err := apacheconf.Detect(*root)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := apacheconf.ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]apacheconf.VHost{}
	ssl, off := 0, 0
	for _, v := range cfg.VHosts {
		if !v.SSL {
			continue
		}
		ssl++
		byName[v.ServerName] = v
		if v.Stapling == "off" {
			off++
		}
	}
	// 30 accounts, wildcard subdomains for accounts 2 and 27, the proxy-subdomain vhost; off:
	// every third account (0, 3, ..., 27: 10, and 27's wildcard subdomain), and the proxy.
	if ssl != 30+2+1 || off != 10+1+1 {
		t.Fatalf("%d SSL vhosts, %d with SSLUseStapling off", ssl, off)
	}
	v6 := byName["site1.example"]
	if !slices.Equal(v6.Addrs, []string{"[::1]:18443", "127.0.0.1:18443"}) || v6.Account != "user1" {
		t.Fatalf("dual-stack vhost: %+v", v6)
	}
	wc := byName["_wildcard_.site2.example"]
	if !slices.Equal(wc.Aliases, []string{"*.site2.example"}) || wc.Account != "user2" || wc.CertFile == "" {
		t.Fatalf("wildcard subdomain: %+v", wc)
	}
	proxy := byName["localhost"]
	if proxy.Stapling != "off" || !slices.Contains(proxy.Aliases, "cpanel.*") {
		t.Fatalf("proxy subdomains: %+v", proxy)
	}
	for _, tg := range probe.Targets(l, cfg, 0) {
		if strings.ContainsAny(tg.ServerName, "*?") || tg.Configured == nil {
			t.Errorf("probe target %+v", tg)
		}
		if tg.ServerName == "_wildcard_.site2.example" && tg.Configured.Leaf.DNSNames[0] != "*.site2.example" {
			t.Errorf("wildcard certificate %v", tg.Configured.Leaf.DNSNames)
		}
	}
	if _, err := os.Stat("/usr/sbin/apache2"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("apache2 missing in CI: %v", err)
		}
		t.Skip("no Debian apache2 here to check the config with")
	}
	out, err := exec.Command("/usr/sbin/apache2", "-d", *root+"/etc/apache2", "-f", "conf/httpd.conf", "-t").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Syntax OK") {
		t.Fatalf("apache2 -t: %v\n%s", err, out)
	}
	// Apache's own reading (-S: every vhost with its file:line; DUMP_CONFIG through mod_info:
	// every directive stapling depends on) agrees with the agent's on these shapes.
	for p, content := range map[string]string{
		"usr/sbin/httpd": "#!/bin/sh\nexec /usr/sbin/apache2 \"$@\"\n",
		"etc/apache2/conf.modules.d/000_mod_info.conf": "LoadModule info_module " + *modules + "/mod_info.so\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(*root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(*root, p), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a, err := apacheconf.Ask(context.Background(), apacheconf.ExecRunner{}, l)
	if err != nil {
		t.Fatal(err)
	}
	// As the audit does: httpd's compiled-in modules and version drive the reading.
	asked := *l
	asked.Answers = a
	if cfg, err = apacheconf.ReadConfig(&asked); err != nil {
		t.Fatal(err)
	}
	if a.Dump == nil {
		t.Fatal("no DUMP_CONFIG answer with mod_info loaded")
	}
	if d := cfg.Disagreement(a, l.ErrorLog); d != "" {
		t.Fatalf("Apache's reading differs from the agent's: %s", d)
	}
}
