package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The per-vhost Must-Staple exemption on the real Apache. The lab's Must-Staple vhost is given
// cPanel's shape: owned by an account, with its userdata Include line commented out as cPanel
// writes it while the directory does not exist, and a rebuildhttpdconf stand-in that
// uncomments it once the directory exists (as the real rebuild does). With the responder
// healthy, `remediate` (policy.must_staple exempt, the default) writes the exemption file and
// the block in one transaction, rebuilds, tests and restarts: afterwards the Must-Staple vhost
// still sends a staple (what Firefox needs) and the other does not. `revert` removes exactly
// our files and stapling comes back for both.
func TestE2EMustStapleExemption(t *testing.T) {
	l := startLab(t, "MUSTSTAPLE=1")
	vhost := filepath.Join(l.dir, "etc/apache2/conf.d/mustaple.conf")
	conf, err := os.ReadFile(vhost)
	if err != nil {
		t.Fatal(err)
	}
	const line = `Include "conf.d/userdata/ssl/2_4/ms/mustaple.test/*.conf"`
	shaped := strings.Replace(string(conf), "</VirtualHost>",
		"    <IfModule suexec_module>\n        SuexecUserGroup ms ms\n    </IfModule>\n    # "+line+"\n</VirtualHost>", 1)
	if err := os.WriteFile(vhost, []byte(shaped), 0o644); err != nil {
		t.Fatal(err)
	}
	// cPanel's template writes the line uncommented only for a directory that exists.
	rebuild := "#!/bin/sh\n# Stand-in for rebuildhttpdconf: the userdata Include line is written for existing directories.\n" +
		"if [ -d '" + filepath.Join(l.dir, "etc/apache2/conf.d/userdata/ssl/2_4/ms/mustaple.test") + "' ]; then\n" +
		"  sed -i 's|# Include \"conf.d/userdata/|Include \"conf.d/userdata/|' '" + vhost + "'\n" +
		"else\n  sed -i 's|    Include \"conf.d/userdata/|    # Include \"conf.d/userdata/|' '" + vhost + "'\nfi\necho \"Built httpd.conf OK\"\n"
	if err := os.WriteFile(filepath.Join(l.dir, "usr/local/cpanel/scripts/rebuildhttpdconf"), []byte(rebuild), 0o755); err != nil {
		t.Fatal(err)
	}
	l.restart()
	original := l.include()
	for _, name := range []string{"shop.test", "mustaple.test"} {
		if h := l.handshake(name); h.err != nil || !h.stapled {
			t.Fatalf("%s before: %+v", name, h)
		}
	}

	r := runAgent(t, nil, "--root", l.dir, "remediate")
	if r.code != 0 || !strings.Contains(r.stdout, "stapling kept on for Must-Staple vhosts: mustaple.test") || !strings.Contains(r.stdout, "cpanel/scripts/rebuildhttpdconf") {
		t.Fatalf("remediate: %+v", r)
	}
	exemption := filepath.Join(l.dir, "etc/apache2/conf.d/userdata/ssl/2_4/ms/mustaple.test/stapling-agent-must-staple.conf")
	if _, err := os.Stat(exemption); err != nil {
		t.Fatal(err)
	}
	if h := l.handshake("mustaple.test"); h.err != nil || !h.stapled {
		t.Fatalf("mustaple.test after remediate: %+v (Firefox would hard-fail without a staple)", h)
	}
	if h := l.handshake("shop.test"); h.err != nil || h.stapled {
		t.Fatalf("shop.test after remediate: %+v", h)
	}
	journal, _ := os.ReadFile(filepath.Join(l.dir, "var/lib/stapling-agent/journal.jsonl"))
	if !strings.Contains(string(journal), `"files":["/etc/apache2/conf.d/userdata/ssl/2_4/ms/mustaple.test/stapling-agent-must-staple.conf","/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"]`) {
		t.Fatalf("journal lacks the transaction's files:\n%s", journal)
	}
	if r := runAgent(t, nil, "--root", l.dir, "remediate"); r.code != 0 || !strings.Contains(r.stdout, "nothing to do") {
		t.Fatalf("second remediate: %+v", r)
	}

	r = runAgent(t, nil, "--root", l.dir, "revert")
	if r.code != 0 || !strings.Contains(r.stdout, "removed "+"/etc/apache2/conf.d/userdata/ssl/2_4/ms/mustaple.test/stapling-agent-must-staple.conf") {
		t.Fatalf("revert: %+v", r)
	}
	if _, err := os.Stat(filepath.Dir(exemption)); !os.IsNotExist(err) || l.include() != original || !strings.Contains(r.stdout, "rebuildhttpdconf") {
		t.Fatalf("revert left our files: %v, include %q", err, l.include())
	}
	for _, name := range []string{"shop.test", "mustaple.test"} {
		if h := l.handshake(name); h.err != nil || !h.stapled {
			t.Fatalf("%s after revert: %+v", name, h)
		}
	}
}
