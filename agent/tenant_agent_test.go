package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// forgeFailure makes mallory's code write one failed renewal, perfectly shaped, dated at, as
// mod_ssl would log it for responder (host:port).
func (l *lab) forgeFailure(t *testing.T, via string, at time.Time, pid int, responder string) {
	t.Helper()
	ts := at.Format(apacheTime)
	l.forge(t, via, fmt.Sprintf("[%s] [ssl:error] [pid %d] (111)Connection refused: [client 127.0.0.1:4242] AH01974: could not connect to OCSP responder '%s'", ts, pid, responder))
	l.forge(t, via, fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error", ts, pid))
}

// auditDecision runs the audit and returns its exit code, decision kind and the JSON.
func auditDecision(t *testing.T, dir string) (int, string, map[string]any) {
	t.Helper()
	code, doc := auditJSON(t, dir)
	pol, _ := doc["policy"].(map[string]any)
	dec, _ := pol["decision"].(map[string]any)
	kind, _ := dec["kind"].(string)
	return code, kind, doc
}

// The hostile tenant on the real Apache: mallory's CGI and PHP scripts write perfectly shaped
// failures naming the host's real, healthy responder, lines dated hours ahead, and lines naming
// responders no certificate uses. The daemon never restarts Apache or writes the include for
// them: it asks the responder itself, which answers (not_corroborated). The audit says the
// same. Then the real responder goes down and the real outage is still found and fixed once.
func TestTenantForgedLinesNeverAct(t *testing.T) {
	l := startTenantLab(t)
	d := l.startDaemon()
	include, before := l.include(), l.restarts()
	served := "127.0.0.1:" + l.ocspPort
	now := time.Now()
	for i := 0; i < 4; i++ {
		l.forgeFailure(t, "cgi", now, 4300+i, served)
		l.forgeFailure(t, "php", now, 4400+i, served)
		l.forgeFailure(t, "cgi", now, 4500+i, "ocsp.evil.example")     // no served certificate names it
		l.forgeFailure(t, "php", now.Add(2*time.Hour), 4600+i, served) // dated ahead: skewed
	}
	defer func() {
		if t.Failed() {
			t.Logf("daemon:\n%s", d.stderr.String())
		}
	}()
	waitFor(t, "the daemon to check the responder", func() bool {
		return strings.Contains(d.stderr.String(), `"decision":"not_corroborated"`)
	})
	code, kind, doc := auditDecision(t, l.dir)
	fails := doc["failures"].(map[string]any)
	if code != 1 || kind != "not_corroborated" || fails["foreign"].(float64) < 4 {
		t.Fatalf("audit: exit %d, decision %s, failures %v\n%s", code, kind, fails, doc["summary"])
	}
	if strings.Contains(d.stderr.String(), `"decision":"remediate"`) || l.include() != include || l.restarts() != before {
		t.Fatalf("acted on forged lines:\n%s", d.stderr.String())
	}
	if h := l.staple(t, "shop.test"); !h.stapled {
		t.Fatal("shop.test lost its staple")
	}

	// The real outage: the responder goes away, real handshakes fail, the daemon's own check
	// fails too, and it remediates once.
	l.responderStop()
	l.restart()
	before = l.restarts()
	// Within the 10 s for which the daemon trusts the responder's last good answer.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stderr.String(), `"decision":"remediate"`) {
		if time.Now().After(deadline) {
			t.Fatal("the real outage was not fixed")
		}
		l.failuresFor(1)
		time.Sleep(100 * time.Millisecond)
	}
	d.stop(t)
	if n := strings.Count(d.stderr.String(), `"decision":"remediate"`); n != 1 || l.restarts() != before+1 || !strings.Contains(l.include(), "# BEGIN stapling-agent") {
		t.Fatalf("%d remediations, restarts %d -> %d\n%s", n, before, l.restarts(), d.stderr.String())
	}
}

// One account's certificate names a responder that cannot be reached: mod_ssl logs genuine
// failures, the daemon's own check fails too, but only mallory depends on that responder while
// other accounts' vhosts staple fine. The daemon does not turn stapling off for everyone: it
// reports the affected vhost and account (scoped_out) and restarts nothing; the audit agrees.
func TestTenantDeadResponderIsScopedOut(t *testing.T) {
	l := startTenantLab(t)
	d := l.startDaemon()
	include, before := l.include(), l.restarts()
	waitFor(t, "the scoped-out decision", func() bool {
		l.handshake("mallory.test")
		return strings.Contains(d.stderr.String(), `"decision":"scoped_out"`)
	})
	code, kind, doc := auditDecision(t, l.dir)
	dec := doc["policy"].(map[string]any)["decision"].(map[string]any)
	aff, _ := dec["affected"].(map[string]any)
	if code != 1 || kind != "scoped_out" || aff == nil || fmt.Sprint(aff["accounts"]) != "[mallory]" || fmt.Sprint(aff["vhosts"]) != "[mallory.test]" {
		t.Fatalf("audit: exit %d, decision %s: %v", code, kind, dec)
	}
	d.stop(t)
	if strings.Contains(d.stderr.String(), `"decision":"remediate"`) || l.include() != include || l.restarts() != before {
		t.Fatalf("turned stapling off for everyone over one tenant's responder:\n%s", d.stderr.String())
	}
	for _, name := range []string{"shop.test", "alice.test"} {
		if h := l.staple(t, name); !h.stapled {
			t.Fatalf("%s lost its staple", name)
		}
	}
}
