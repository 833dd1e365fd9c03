package audit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/frontend"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// NGINX answers on 443 (as ea-nginx sets it up: Apache on 444): Apache's failures are its
// backend's, counted as backend_only; the decision is not_client_facing whatever the count;
// NGINX's own OCSP lines are read from its error log (its client-facing lines, which carry
// "*CID", never); the status is a warning, not critical. Behind LiteSpeed the agent cannot see
// what visitors get: unknown, never OK.
func TestAuditFrontEnd(t *testing.T) {
	log := outage(4, 3*time.Minute, "111", "AH01974", "could not connect to OCSP responder 'ocsp.example.net'")
	h, e := auditFixture(t, wiredHTTPD, "", log)
	if err := frontend.WriteFakeListener(h.Root, 812, 443, "/usr/sbin/nginx"); err != nil {
		t.Fatal(err)
	}
	if err := frontend.WriteFakeListener(h.Root, 900, 444, "/usr/sbin/httpd"); err != nil {
		t.Fatal(err)
	}
	fakehost.Write(t, h.Root, "/etc/nginx/nginx.conf", "events {}\nhttp {\n  ssl_stapling on;\n  include conf.d/*.conf;\n}\n")
	fakehost.Write(t, h.Root, "/etc/nginx/conf.d/ea-nginx.conf", "server {\n  listen 443 ssl;\n  server_name a.example;\n  ssl_certificate /etc/apache2/ssl/a.example.combined;\n}\n")
	stamp := func(ago time.Duration) string { return auditNow.Add(-ago).Format("2006/01/02 15:04:05") }
	sfx := ` while requesting certificate status, responder: ocsp.example.net, peer: 192.0.2.7:80, certificate: "/etc/apache2/ssl/a.example.combined"`
	nginxLog := fmt.Sprintf("%s [error] 31#31: OCSP responder timed out (110: Connection timed out)%s\n", stamp(5*time.Minute), sfx) +
		fmt.Sprintf("%s [error] 31#31: OCSP responder prematurely closed connection%s\n", stamp(4*time.Minute), sfx) +
		// A client's request carrying the same words: nginx logs it with "*CID" and client text.
		fmt.Sprintf("%s [error] 31#31: *7 open() \"/var/www/OCSP responder timed out (110: x)%s\" failed (2: No such file or directory), client: 203.0.113.9, server: a.example\n", stamp(3*time.Minute), sfx)
	fakehost.Write(t, h.Root, "/var/log/nginx/error.log", nginxLog)

	r := runAudit(e)
	if r.FrontEnd == nil || r.FrontEnd.Server != frontend.ServerNginx || r.FrontEnd.ClientFacing || fmt.Sprint(r.FrontEnd.ApachePorts) != "[444]" {
		t.Fatalf("frontend %+v", r.FrontEnd)
	}
	if r.Failures.Total != 4 || r.Failures.BackendOnly != 4 || r.Policy.Decision.Kind != policy.NotClientFacing || r.Policy.WouldAct {
		t.Fatalf("failures %d, backend only %d, decision %s", r.Failures.Total, r.Failures.BackendOnly, r.Policy.Decision.Kind)
	}
	n := r.Nginx
	if n == nil || n.Failures.Total != 2 || n.Failures.ByResponder["ocsp.example.net"] != 2 || n.SSLServers != 1 || n.StaplingServers != 1 {
		t.Fatalf("nginx %+v", n)
	}
	if r.Status != Warning || !strings.Contains(r.Summary, "nginx answers on the HTTPS port, not Apache") || !strings.Contains(r.Summary, "NGINX (in front) logged 2 OCSP failures") {
		t.Fatalf("%s: %s", r.Status, r.Summary)
	}
	var nagios strings.Builder
	if err := Render(&nagios, r, Nagios); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(nagios.String(), "STAPLING WARNING - ") || !strings.Contains(nagios.String(), "frontend: nginx answers on the HTTPS port; Apache's failures are its backend's (4)") {
		t.Errorf("nagios:\n%s", nagios.String())
	}
	var text, prom strings.Builder
	if err := Render(&text, r, Text); err != nil {
		t.Fatal(err)
	}
	if err := Render(&prom, r, Prometheus); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"frontend      nginx on the HTTPS port; Apache on [444]", "backend only  4", "nginx         1 of 1 SSL servers staple; 2 OCSP failures", "NGINX staples asynchronously"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	for _, want := range []string{`stapling_agent_frontend{server="nginx"} 1`, "stapling_agent_backend_only_failures 4", `stapling_agent_nginx_ocsp_failures_by_responder{responder="ocsp.example.net"} 2`} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("prometheus lacks %q", want)
		}
	}

	// LiteSpeed in front (it replaces /usr/sbin/httpd and keeps the original as httpd_ls_bak).
	h, e = auditFixture(t, wiredHTTPD, "", "")
	fakehost.Write(t, h.Root, "/usr/sbin/httpd_ls_bak", "")
	if err := frontend.WriteFakeListener(h.Root, 700, 443, "/usr/local/lsws/bin/lshttpd"); err != nil {
		t.Fatal(err)
	}
	if r = runAudit(e); r.FrontEnd.Server != frontend.ServerLiteSpeed || r.Status != Unknown || !strings.Contains(r.Summary, "LiteSpeed answers on the HTTPS port") {
		t.Fatalf("litespeed: %s %s: %s", r.FrontEnd.Server, r.Status, r.Summary)
	}
}

// WHM's switch is reported next to the effective stapling; when our block turns stapling off
// while WHM shows On, the summary says which wins and why.
func TestAuditWHMSwitch(t *testing.T) {
	h, e := auditFixture(t, wiredHTTPD, "", "")
	fakehost.Write(t, h.Root, "/etc/cpanel/ea4/ea4.conf", `{"sslusestapling":"On"}`)
	r := runAudit(e)
	if r.WHM == nil || r.WHM.Shown != "On" || r.WHM.Differs {
		t.Fatalf("whm %+v", r.WHM)
	}
	h, e = auditFixture(t, wiredHTTPD, "", "")
	fakehost.Write(t, h.Root, "/etc/cpanel/ea4/ea4.conf", `{"sslusestapling":"On"}`)
	block := managedOffBlock(t)
	fakehost.Write(t, h.Root, ea4Include, block)
	r = runAudit(e)
	if !r.WHM.Differs || !strings.Contains(r.Summary, "WHM shows SSL Use Stapling On, but stapling-agent's block") || r.Status != OK {
		t.Fatalf("%s: %s (%+v)", r.Status, r.Summary, r.WHM)
	}
	var text, nagios strings.Builder
	if err := Render(&text, r, Text); err != nil || !strings.Contains(text.String(), "whm           SSL Use Stapling shows On") {
		t.Fatalf("text: %v\n%s", err, text.String())
	}
	if err := Render(&nagios, r, Nagios); err != nil || !strings.Contains(nagios.String(), "whm: SSL Use Stapling shows On, which does not win: WHM shows") {
		t.Fatalf("nagios: %v\n%s", err, nagios.String())
	}
}

func managedOffBlock(t *testing.T) string {
	t.Helper()
	b, _ := apacheconf.ApplyBlock(nil)
	return string(b)
}

// policy.must_staple exempt: the audit names the Must-Staple vhost a remediation would keep
// stapling on for (the same plan a real run makes); once our exemption file keeps it on, the
// vhost is reported as exempted, not as an override to review, and the decision is the
// daemon's (veto refuses as before).
func TestAuditMustStapleExemption(t *testing.T) {
	const (
		msCert = "/etc/apache2/ssl/ms.example.combined"
		msDir  = "/etc/apache2/conf.d/userdata/ssl/2_4/msuser/ms.example"
	)
	httpd := wiredHTTPD + "<VirtualHost *:443>\nServerName ms.example\nSSLEngine on\nSSLCertificateFile " + msCert + "\n" +
		"<IfModule suexec_module>\n  SuexecUserGroup msuser msuser\n</IfModule>\n  Include \"" + msDir + "/*.conf\"\n</VirtualHost>\n"
	log := outage(4, 3*time.Minute, "111", "AH01974", "could not connect to OCSP responder 'ocsp.example.net'")
	h, e := auditFixture(t, httpd, "", log)
	fakehost.Write(t, h.Root, msCert, fakehost.Cert(t, "ms.example", fakehost.Responder, true))
	fakehost.Write(t, h.Root, msDir+"/.keep", "")
	r := runAudit(e)
	if r.Stapling.MustStapleMode != "exempt" || strings.Join(r.Stapling.WouldExempt, " ") == "" || !strings.Contains(r.Stapling.WouldExempt[0], "ms.example") ||
		r.Policy.Decision.Kind != policy.Act {
		t.Fatalf("exempt: %+v, decision %s: %s", r.Stapling.WouldExempt, r.Policy.Decision.Kind, r.Policy.Decision.Reason)
	}
	veto := h.Env(t, func(c *config.Config) { c.Policy.MustStaple = config.MustStapleVeto })
	if r := Run(context.Background(), veto, opts); r.Policy.Decision.Kind != policy.Refused || len(r.Stapling.WouldExempt) != 0 {
		t.Fatalf("veto: %s %v", r.Policy.Decision.Kind, r.Stapling.WouldExempt)
	}
	// After the remediation: our file keeps ms.example on; global off.
	fakehost.Write(t, h.Root, ea4Include, managedOffBlock(t))
	fakehost.Write(t, h.Root, msDir+"/"+apacheconf.ExemptFileName, "SSLUseStapling on\n")
	r = runAudit(e)
	if strings.Join(r.Stapling.Exempted, " ") != "ms.example" || strings.Contains(r.Summary, "turn it back on") ||
		!strings.Contains(r.Summary, "stapling kept on for 1 Must-Staple vhost by stapling-agent's exemption (ms.example)") {
		t.Fatalf("exempted %v: %s", r.Stapling.Exempted, r.Summary)
	}
	for _, a := range r.Actions {
		if a.Action == ActReviewOverride {
			t.Fatalf("our exemption listed as an override to review: %+v", a)
		}
	}
}

// NGINX's responder names are bounded in the JSON too: forged lines naming thousands of
// responders become the top ten and "other".
func TestAuditNginxRespondersBounded(t *testing.T) {
	h, e := auditFixture(t, wiredHTTPD, "", "")
	if err := frontend.WriteFakeListener(h.Root, 812, 443, "/usr/sbin/nginx"); err != nil {
		t.Fatal(err)
	}
	fakehost.Write(t, h.Root, "/etc/nginx/nginx.conf", "events {}\nhttp {}\n")
	var log strings.Builder
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&log, "%s [error] %d#%d: OCSP responder timed out (110: Connection timed out) while requesting certificate status, responder: r%d.example, peer: 192.0.2.7:80, certificate: \"/x%d.pem\"\n",
			auditNow.Add(-time.Minute).Format("2006/01/02 15:04:05"), i, i, i, i)
	}
	fakehost.Write(t, h.Root, "/var/log/nginx/error.log", log.String())
	r := runAudit(e)
	if n := r.Nginx; n == nil || n.Failures.Total != 50 || len(n.Failures.ByResponder) != 11 || n.Failures.ByResponder["other"] != 40 {
		t.Fatalf("nginx %+v", r.Nginx)
	}
}
