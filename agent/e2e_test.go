package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/apacheconf"

	"github.com/stapling-agent/stapling-agent/agent/config"
)

// failuresFor makes n real responder failures: handshakes while the responder is down (or
// hanging), each one a fresh renewal attempt by mod_ssl.
func (l *lab) failuresFor(n int) []handshake {
	var hs []handshake
	for i := 0; i < n; i++ {
		hs = append(hs, l.handshake("shop.test"))
	}
	return hs
}

func auditJSON(t *testing.T, dir string) (int, map[string]any) {
	t.Helper()
	r := runAgent(t, nil, "--root", dir, "audit", "--format", "json")
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("audit JSON: %v\n%s", err, r.stdout)
	}
	return r.code, doc
}

// Scenarios 1 and 5: the incident on a real Apache. The responder refuses connections;
// mod_ssl writes real AH01974/AH01941 lines; the audit says critical with the right cause and
// responder; the daemon remediates once; afterwards handshakes succeed, add no AH01941, and
// the audit says ok with our block.
func TestE2EIncidentDaemonFixes(t *testing.T) {
	l := startLab(t)
	if h := l.handshake("shop.test"); h.err != nil || !h.stapled {
		t.Fatalf("healthy lab: %+v", h)
	}
	l.responderStop()
	l.restart() // a fresh cache: the next handshakes must fetch a staple
	for _, h := range l.failuresFor(4) {
		if h.err != nil {
			t.Fatalf("handshake during the outage: %v", h.err)
		}
	}
	if n := strings.Count(l.errorLog(), "AH01941"); n < 3 {
		t.Fatalf("real mod_ssl logged %d AH01941 lines:\n%s", n, l.errorLog())
	}
	code, doc := auditJSON(t, l.dir)
	f := doc["failures"].(map[string]any)
	if code != 2 || doc["status"] != "critical" || f["by_cause"].(map[string]any)["connect_refused"] == nil ||
		f["by_responder"].(map[string]any)["127.0.0.1:"+l.ocspPort] == nil {
		t.Fatalf("audit before: exit %d %v", code, doc["summary"])
	}

	before := l.restarts()
	d := l.startDaemon() // replays the failures already logged
	waitFor(t, "the daemon's remediation", func() bool { return strings.Contains(d.stderr.String(), `"decision":"remediate"`) })
	if !strings.Contains(d.stderr.String(), `"result":"ok"`) || l.restarts() != before+1 {
		t.Fatalf("remediation: restarts %d -> %d\n%s", before, l.restarts(), d.stderr.String())
	}
	failuresAfterFix := strings.Count(l.errorLog(), "AH01941")
	for _, h := range l.failuresFor(5) {
		if h.err != nil || h.stapled {
			t.Fatalf("handshake after the fix: %+v", h)
		}
	}
	if n := strings.Count(l.errorLog(), "AH01941"); n != failuresAfterFix {
		t.Fatalf("%d new AH01941 lines after the fix", n-failuresAfterFix)
	}
	d.stop(t)
	if l.restarts() != before+1 {
		t.Fatal("the daemon restarted Apache more than once")
	}
	code, doc = auditJSON(t, l.dir)
	if st := doc["stapling"].(map[string]any); code != 0 || st["managed_block"] != true || st["effective"] != "off" {
		t.Fatalf("audit after: exit %d %v", code, doc["summary"])
	}
}

// Scenario 1, the delay: a black-holed responder makes every handshake wait the responder
// timeout (cPanel: 3 s); after remediate, handshakes are fast again.
func TestE2EHandshakeDelayRemoved(t *testing.T) {
	l := startLab(t)
	l.hangResponder()
	l.restart()
	slow := l.handshake("shop.test")
	if slow.err != nil || slow.dur < 2500*time.Millisecond {
		t.Fatalf("handshake with a hanging responder: %+v (expected to wait ~3 s)", slow)
	}
	if r := runAgent(t, nil, "--root", l.dir, "remediate"); r.code != 0 {
		t.Fatalf("remediate: %+v", r)
	}
	for i := 0; i < 3; i++ {
		fast := l.handshake("shop.test")
		if fast.err != nil || fast.dur > time.Second || fast.stapled {
			t.Fatalf("handshake after remediate: %+v (before: %s)", fast, slow.dur)
		}
	}
	t.Logf("handshake with a hanging responder %s; after remediate fast", slow.dur)
}

// Scenario 2: a healthy responder; good staples; the daemon reads every line and does nothing.
func TestE2EHealthyResponderNothingHappens(t *testing.T) {
	l := startLab(t)
	before := l.restarts()
	d := l.startDaemon()
	for i := 0; i < 5; i++ {
		if h := l.handshake("shop.test"); h.err != nil || !h.stapled {
			t.Fatalf("handshake %d: %+v", i, h)
		}
	}
	// A healthy responder gives mod_ssl nothing to log, so there is nothing to act on.
	if strings.Contains(l.errorLog(), "[ssl:error]") {
		t.Fatalf("errors with a healthy responder:\n%s", l.errorLog())
	}
	d.stop(t)
	if strings.Contains(d.stderr.String(), `"decision"`) || l.restarts() != before {
		t.Fatalf("the daemon acted on a healthy host:\n%s", d.stderr.String())
	}
	if code, doc := auditJSON(t, l.dir); code != 0 {
		t.Fatalf("audit: %d %v", code, doc["summary"])
	}
}

// Scenario 3: an admin planted a syntax error next to our block; the config test fails, the
// include comes back byte for byte, nothing restarts, Apache keeps serving.
func TestE2EBrokenIncludeRestored(t *testing.T) {
	l := startLab(t)
	inc := filepath.Join(l.dir, ea4Include)
	planted := l.include() + "ThisIsNotADirective on\n"
	os.WriteFile(inc, []byte(planted), 0o644)
	before := l.restarts()
	r := runAgent(t, nil, "--root", l.dir, "remediate")
	if r.code != 1 || !strings.Contains(r.stderr, "ThisIsNotADirective") || !strings.Contains(r.stderr, "restored") {
		t.Fatalf("remediate: %+v", r)
	}
	if l.include() != planted || l.restarts() != before {
		t.Fatalf("include %q, restarts %d -> %d", l.include(), before, l.restarts())
	}
	if h := l.handshake("shop.test"); h.err != nil || !h.stapled {
		t.Fatalf("Apache not serving on the old config: %+v", h)
	}
}

// Scenario 4: the restart fails; the include is restored, Apache is restarted on the old
// config and serves (with stapling, as before), exit 1.
func TestE2ERestartFailsRollsBack(t *testing.T) {
	l := startLab(t)
	original := l.include()
	os.WriteFile(filepath.Join(l.dir, "fail-next-restart"), nil, 0o644)
	before := l.restarts()
	r := runAgent(t, nil, "--root", l.dir, "remediate")
	if r.code != 1 || !strings.Contains(r.stderr, "restored") || !strings.Contains(r.stderr, "restarted Apache on it") {
		t.Fatalf("remediate: %+v", r)
	}
	if l.include() != original || l.restarts() != before+2 {
		t.Fatalf("include changed or restarts %d -> %d", before, l.restarts())
	}
	if h := l.handshake("shop.test"); h.err != nil || !h.stapled {
		t.Fatalf("Apache not serving on the old config: %+v", h)
	}
}

// Scenario 6: cpanellogd rotates error_log mid-outage (rename, then graceful restart); the
// daemon still reaches the threshold across both files and acts once.
func TestE2ERotationDuringOutage(t *testing.T) {
	l := startLab(t)
	l.responderStop()
	l.restart()
	d := l.startDaemon()
	before := l.restarts()
	l.failuresFor(2)
	logDir := filepath.Join(l.dir, "var/log/apache2")
	if err := os.Rename(filepath.Join(logDir, "error_log"), filepath.Join(logDir, "error_log.bkup")); err != nil {
		t.Fatal(err)
	}
	l.restart() // cpanellogd's graceful restart: Apache opens a new error_log
	before++
	l.failuresFor(2)
	waitFor(t, "the daemon's remediation", func() bool { return strings.Contains(d.stderr.String(), `"decision":"remediate"`) })
	l.failuresFor(2)
	d.stop(t)
	if n := strings.Count(d.stderr.String(), `"decision":"remediate"`); n != 1 || l.restarts() != before+1 {
		t.Fatalf("%d remediations, restarts %d -> %d\n%s", n, before, l.restarts(), d.stderr.String())
	}
	if !strings.Contains(d.stderr.String(), `"rotations":1`) {
		t.Fatalf("rotation not seen:\n%s", d.stderr.String())
	}
}

func probeJSON(t *testing.T, args ...string) (int, probe.Report) {
	t.Helper()
	r := runAgent(t, nil, append(args, "probe", "--format", "json")...)
	var rep probe.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("probe JSON: %v\n%s", err, r.stdout)
	}
	return r.code, rep
}

// Issue 6 on the real Apache: protocol versions per SSLProtocol, the staple good with the
// responder up, none and connect_refused with it down.
func TestE2EProbe(t *testing.T) {
	l := startLab(t)
	l.handshake("shop.test") // let mod_ssl fetch its first staple
	code, rep := probeJSON(t, "--root", l.dir)
	if code != 0 || len(rep.Targets) != 1 || len(rep.Responders) != 1 {
		t.Fatalf("exit %d: %+v", code, rep)
	}
	tg := rep.Targets[0]
	want := map[string]string{"TLS1.0": "alert", "TLS1.1": "alert", "TLS1.2": "accepted", "TLS1.3": "accepted"}
	for v, w := range want {
		if tg.Protocols[v] != w {
			t.Errorf("%s: %s, want %s (SSLProtocol -all +TLSv1.2 +TLSv1.3)", v, tg.Protocols[v], w)
		}
	}
	if !tg.Staple.Present || tg.Staple.CertStatus != "good" || tg.Certificate.MatchesConfigured == nil || !*tg.Certificate.MatchesConfigured ||
		tg.Certificate.MustStaple || tg.Negotiated.Version != "TLS 1.3" {
		t.Fatalf("target: %+v", tg)
	}
	if r := rep.Responders[0]; !r.OK || r.CertStatus != "good" || r.HTTPStatus != 200 {
		t.Fatalf("responder: %+v", r)
	}

	l.responderStop()
	l.restart()
	code, rep = probeJSON(t, "--root", l.dir)
	if code != 1 || rep.Targets[0].Staple.Present || rep.Responders[0].OK || rep.Responders[0].Cause != "connect_refused" {
		t.Fatalf("responder down: exit %d %+v", code, rep)
	}

	// audit --probe: real failures in the log, and the responder failing now with the same
	// cause confirms them.
	l.failuresFor(3)
	r := runAgent(t, nil, "--root", l.dir, "audit", "--probe", "--format", "json")
	var doc struct {
		Status  string
		Summary string
		Probe   *probe.Report
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 2 || doc.Probe == nil || len(doc.Probe.Responders) != 1 {
		t.Fatalf("audit --probe: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if doc.Probe.Responders[0].Cause != "connect_refused" || !strings.Contains(doc.Summary, "confirmed now: http://127.0.0.1:"+l.ocspPort+"/ fails from this host (connect_refused)") {
		t.Fatalf("audit --probe summary %q, responders %+v", doc.Summary, doc.Probe.Responders)
	}
	if code, _ := probeJSON(t, "--target", "127.0.0.1:"+l.httpsPort, "--servername", "shop.test"); code != 0 {
		t.Fatalf("--target: exit %d", code)
	}
}

// A Must-Staple certificate blocks remediation (Firefox would hard-fail); --force overrides;
// the verification after the real restart passes and goes to the journal.
func TestE2EMustStapleGuardAndVerification(t *testing.T) {
	l := startLab(t, "MUSTSTAPLE=1")
	original := l.include()
	before := l.restarts()
	r := runAgent(t, nil, "--root", l.dir, "remediate")
	if r.code != 2 || !strings.Contains(r.stderr, "mustaple.test") || !strings.Contains(r.stderr, "Must-Staple") {
		t.Fatalf("remediate: %+v", r)
	}
	if l.include() != original || l.restarts() != before {
		t.Fatal("a refused remediation changed something")
	}
	_, doc := auditJSON(t, l.dir)
	if ms := doc["stapling"].(map[string]any)["must_staple"].([]any); len(ms) != 1 || ms[0].(map[string]any)["vhost"] != "mustaple.test" {
		t.Fatalf("audit must_staple: %v", ms)
	}
	r = runAgent(t, nil, "--root", l.dir, "remediate", "--force")
	if r.code != 0 || !strings.Contains(r.stdout, "handshakes before/after:") || !strings.Contains(r.stdout, " shop.test ") {
		t.Fatalf("remediate --force: %+v", r)
	}
	journal, _ := os.ReadFile(filepath.Join(l.dir, config.DefaultStateDir, "journal.jsonl"))
	if !strings.Contains(string(journal), `"detail":"handshakes before/after:`) {
		t.Fatalf("journal lacks the verification:\n%s", journal)
	}
	for _, name := range []string{"shop.test", "mustaple.test"} {
		if h := l.handshake(name); h.err != nil || h.stapled {
			t.Fatalf("%s after remediate: %+v", name, h)
		}
	}
}

// During a black-holed outage every handshake that asks for a staple waits on mod_ssl's fetch:
// the probe says "stalled" (not "timeout", the protocols are fine), tries a stalled vhost once
// rather than once per protocol, and its --deadline bounds the whole run.
func TestE2EProbeDuringOutage(t *testing.T) {
	l := startLab(t)
	l.hangResponder()
	l.restart()
	start := time.Now()
	code, rep := probeJSON(t, "--root", l.dir, "--timeout", "2s")
	took := time.Since(start)
	if code != 1 || len(rep.Targets) != 1 {
		t.Fatalf("exit %d: %+v", code, rep)
	}
	tg := rep.Targets[0]
	if !strings.Contains(tg.Error, "stalled") || tg.Protocols["TLS1.3"] != "stalled" || tg.Protocols["TLS1.2"] != "stalled" {
		t.Fatalf("target: %+v", tg)
	}
	// One stalled handshake (2 s) and one responder request (2 s), not five handshakes.
	if took > 8*time.Second {
		t.Fatalf("probe took %s", took)
	}
	start = time.Now()
	code, rep = probeJSON(t, "--root", l.dir, "--timeout", "10s", "--deadline", "1s")
	if code != 1 || !strings.Contains(rep.Incomplete, "--deadline 1s") || time.Since(start) > 4*time.Second {
		t.Fatalf("deadline: exit %d after %s: %+v", code, time.Since(start), rep)
	}
}

// The audit asks the real httpd, read-only, what only it knows (version, compiled-in and
// loaded modules, its main ErrorLog) and checks its own reading against the answers: on the
// lab they agree. With --no-exec it asks nothing and says what was not checked.
func TestE2EAuditAsksApache(t *testing.T) {
	l := startLab(t)
	_, doc := auditJSON(t, l.dir)
	ap := doc["apache"].(map[string]any)
	if ap["asked"] != true || !strings.HasPrefix(ap["version"].(string), "2.4.") || ap["disagreement"] != nil ||
		ap["error_log"] != "/etc/apache2/logs/error_log" || !strings.Contains(fmt.Sprint(ap["loaded_modules"]), "ssl_module") {
		t.Fatalf("apache: %v", ap)
	}
	if ap["dump_config"] != false {
		t.Fatalf("DUMP_CONFIG compared without mod_info: %v", ap)
	}
	r := runAgent(t, nil, "--root", l.dir, "audit", "--no-exec", "--format", "json")
	if !strings.Contains(r.stdout, `"asked": false`) || !strings.Contains(r.stdout, "not asked (--no-exec)") {
		t.Fatalf("--no-exec: %s", r.stdout)
	}

	// With mod_info loaded (as EA4's ea-apache24-mod_info package does, from conf.modules.d)
	// Apache prints its evaluated config, and every directive stapling and the error log
	// depend on is compared: on the lab they agree.
	put := func(hostPath, content string) {
		if err := os.WriteFile(filepath.Join(l.dir, hostPath), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("etc/apache2/conf.modules.d/000_mod_info.conf", "LoadModule info_module /usr/lib/apache2/modules/mod_info.so\n")
	_, doc = auditJSON(t, l.dir)
	if ap := doc["apache"].(map[string]any); ap["dump_config"] != true || ap["disagreement"] != nil {
		t.Fatalf("with mod_info: %v", ap)
	}
	// Apache also expands ${VAR} from its environment; the agent's model does not (it cannot
	// know the service's environment). Only DUMP_CONFIG shows what Apache made of the line:
	// the audit says unknown with the difference, and remediate refuses to act on the reading.
	put("etc/apache2/conf.d/zz-env.conf", "SSLUseStapling ${LAB_STAPLING}\n")
	envOn := []string{"LAB_STAPLING=on"}
	r = runAgent(t, envOn, "--root", l.dir, "audit", "--format", "json")
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("audit JSON: %v\n%s", err, r.stdout)
	}
	ap = doc["apache"].(map[string]any)
	if r.code != 3 || doc["status"] != "unknown" || !strings.Contains(fmt.Sprint(ap["disagreement"]), `/etc/apache2/conf.d/zz-env.conf:1 sslusestapling ["on"] (global) in Apache's reading`) {
		t.Fatalf("exit %d, status %v: %v", r.code, doc["status"], ap)
	}
	r = runAgent(t, envOn, "--root", l.dir, "audit")
	if !strings.Contains(r.stdout, "asked (-v -l -M -S and -t -D DUMP_CONFIG): the agent's reading DISAGREES") {
		t.Fatalf("text report: %s", r.stdout)
	}
	before, _ := os.ReadFile(filepath.Join(l.dir, "etc/apache2/conf.d/includes/pre_virtualhost_global.conf"))
	r = runAgent(t, envOn, "--root", l.dir, "remediate")
	after, _ := os.ReadFile(filepath.Join(l.dir, "etc/apache2/conf.d/includes/pre_virtualhost_global.conf"))
	if r.code != 2 || !strings.Contains(r.stderr, "DUMP_CONFIG") || string(before) != string(after) {
		t.Fatalf("remediate on a reading Apache contradicts: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Real handshakes are the oracle for per-vhost stapling: with a healthy responder Apache sends a
// staple exactly when stapling is on for the vhost. A sample of vhosts, each turning stapling on
// or off in one of the ways that fooled the old model (<IfModule mod_ssl>, <IfVersion>,
// Define and ${VAR}, a continuation, a per-vhost userdata include), with the global value off:
// the agent's reading of each vhost agrees with what Apache sends.
func TestE2EStaplePerVhostMatchesTheReading(t *testing.T) {
	l := startLab(t)
	conf := filepath.Join(l.dir, "etc/apache2/conf.d")
	vhost := func(name, body string) string {
		return fmt.Sprintf("<VirtualHost 127.0.0.1:%s>\n    ServerName %s\n    SSLEngine on\n    SSLCertificateFile ssl/shop.test.combined\n%s</VirtualHost>\n", l.httpsPort, name, body)
	}
	sample := "Define STAPLE_ON on\nDefine STAPLE_LINE \"SSLUseStapling on\"\nDefine STAPLE_OFF off\n" +
		vhost("inherits.test", "") +
		vhost("own-on.test", "    SSLUseStapling on\n") +
		vhost("wrong-module.test", "    <IfModule mod_ssl>\n        SSLUseStapling on\n    </IfModule>\n") +
		vhost("ifversion.test", "    <IfVersion >= 2.4>\n        SSLUseStapling on\n    </IfVersion>\n") +
		vhost("define.test", "    SSLUseStapling ${STAPLE_ON}\n") +
		vhost("continued.test", "    SSLUseStapling \\\n        on\n") +
		// ${VAR} is expanded on the whole line before it is split: a variable can hold the
		// whole directive, and a FLAG takes the first word of what it gets.
		vhost("whole-line.test", "    ${STAPLE_LINE}\n") +
		vhost("flag-first.test", "    SSLUseStapling on ${STAPLE_OFF}\n") +
		vhost("userdata.test", "    IncludeOptional conf.d/userdata/ssl/2_4/u/userdata.test/*.conf\n")
	os.WriteFile(filepath.Join(conf, "sample.conf"), []byte(sample), 0o644)
	os.MkdirAll(filepath.Join(conf, "userdata/ssl/2_4/u/userdata.test"), 0o755)
	os.WriteFile(filepath.Join(conf, "userdata/ssl/2_4/u/userdata.test/stapling.conf"), []byte("SSLUseStapling on\n"), 0o644)
	os.WriteFile(filepath.Join(l.dir, ea4Include), []byte("SSLUseStapling off\n"), 0o644) // global off
	l.restart()

	layout, err := apacheconf.Detect(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := apacheconf.ReadConfig(layout)
	if err != nil {
		t.Fatal(err)
	}
	reading := map[string]bool{}
	for _, v := range cfg.VHosts {
		reading[v.ServerName] = cfg.StaplingOf(v)
	}
	want := map[string]bool{"inherits.test": false, "own-on.test": true, "wrong-module.test": false, "ifversion.test": true,
		"define.test": true, "continued.test": true, "userdata.test": true, "whole-line.test": true, "flag-first.test": true}
	for name, on := range want {
		// The first handshake makes mod_ssl fetch the staple; the second is served from the cache.
		stapled := false
		for i := 0; i < 2; i++ {
			c, err := tls.Dial("tcp", "127.0.0.1:"+l.httpsPort, &tls.Config{ServerName: name, InsecureSkipVerify: true})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			stapled = len(c.ConnectionState().OCSPResponse) > 0
			c.Close()
		}
		if stapled != on || reading[name] != on {
			t.Errorf("%s: Apache stapled %v, the agent reads stapling %v, want %v", name, stapled, reading[name], on)
		}
	}
}

// A custom ErrorLogFormat (set where cPanel admins set it, pre_main_global.conf) that carries
// what the agent needs: real mod_ssl lines in it are read by the audit and the daemon as in
// the default format, and the daemon fixes the outage. One it cannot read (no level) is
// named, with its file:line, and the daemon refuses to start rather than see nothing.
func TestE2ECustomErrorLogFormat(t *testing.T) {
	l := startLab(t)
	preMain := filepath.Join(l.dir, "etc/apache2/conf.d/includes/pre_main_global.conf")
	format := `ErrorLogFormat "%{cu}t %-m %l pid=%P %E: %M"` + "\n"
	if err := os.WriteFile(preMain, []byte(format), 0o644); err != nil {
		t.Fatal(err)
	}
	l.responderStop()
	l.restart()
	for _, h := range l.failuresFor(4) {
		if h.err != nil {
			t.Fatalf("handshake during the outage: %v", h.err)
		}
	}
	if log := l.errorLog(); !strings.Contains(log, " ssl error pid=") || strings.Count(log, "AH01941") < 3 {
		t.Fatalf("Apache did not write its lines in the custom format:\n%s", log)
	}
	code, doc := auditJSON(t, l.dir)
	f := doc["failures"].(map[string]any)
	if code != 2 || doc["layout"].(map[string]any)["error_log_format"] != "%{cu}t %-m %l pid=%P %E: %M" ||
		f["by_cause"].(map[string]any)["connect_refused"] == nil {
		t.Fatalf("audit: exit %d %v %v", code, doc["summary"], f)
	}
	before := l.restarts()
	d := l.startDaemon()
	waitFor(t, "the daemon's remediation", func() bool { return strings.Contains(d.stderr.String(), `"decision":"remediate"`) })
	d.stop(t)
	if !strings.Contains(d.stderr.String(), `"result":"ok"`) || l.restarts() != before+1 {
		t.Fatalf("remediation: restarts %d -> %d\n%s", before, l.restarts(), d.stderr.String())
	}

	if err := os.WriteFile(preMain, []byte(`ErrorLogFormat "[%t] %M"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, doc = auditJSON(t, l.dir)
	if code != 3 || !strings.Contains(fmt.Sprint(doc["summary"]), "pre_main_global.conf:1") || !strings.Contains(fmt.Sprint(doc["summary"]), "has no %m") {
		t.Fatalf("unreadable format: exit %d %v", code, doc["summary"])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := runCmd(t, exec.CommandContext(ctx, agentBin, "--root", l.dir, "run"))
	if r.code != 2 || !strings.Contains(r.stderr, "ErrorLogFormat") {
		t.Fatalf("daemon over an unreadable format: exit %d %s", r.code, r.stderr)
	}
}
