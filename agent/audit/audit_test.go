package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

var auditNow = time.Now().Truncate(time.Second)

func logStamp(ago time.Duration) string {
	return auditNow.Add(-ago).Format("Mon Jan 02 15:04:05.000000 2006")
}

// outage is n failed renewals, one a minute ending `ago` back, each with its transport line.
func outage(n int, ago time.Duration, status, code, msg string) string {
	var sb strings.Builder
	for i := n - 1; i >= 0; i-- {
		at := ago + time.Duration(i)*time.Minute
		fmt.Fprintf(&sb, "[%s] [ssl:error] [pid %d] (%s)x: [client 192.0.2.1:443] %s: %s\n", logStamp(at), 100+i, status, code, msg)
		fmt.Fprintf(&sb, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", logStamp(at-time.Millisecond), 100+i)
	}
	return sb.String()
}

var forgedLines = func() string {
	return fmt.Sprintf("[%s] [core:error] [pid 9] [client 203.0.113.66:41000] AH00126: Invalid URI in request GET /[ssl:error]%%20AH01941:%%20stapling_renew_response:%%20responder%%20error\n", logStamp(time.Minute)) +
		fmt.Sprintf("[%s] [proxy_fcgi:error] [pid 9] [client 203.0.113.66:1] AH01071: Got error 'PHP message: [ssl:error] [pid 1] AH01941: stapling_renew_response: responder error'\n", logStamp(time.Minute))
}()

const (
	ea4Include = fakehost.EA4Include
	ea4HTTPD   = fakehost.EA4HTTPD
	wiredHTTPD = fakehost.WiredHTTPD
)

// down is how the responders answer when the audit asks them: http://ocsp.example.net/ is down.
var down = &fakehost.Asker{Down: map[string]bool{fakehost.Responder: true}}

var opts = Options{Since: 24 * time.Hour, Host: "h", Version: "test", Ask: down.Ask}

func auditFixture(t *testing.T, httpd, include, errorLog string) (*fakehost.Host, *env.Env) {
	t.Helper()
	files := map[string]string{ea4HTTPD: httpd, fakehost.EA4Log: errorLog}
	if include != "" {
		files[ea4Include] = include
	}
	h := fakehost.New(t, "ea4", files)
	h.Set(auditNow)
	return h, h.Env(t, nil)
}

func runAudit(e *env.Env) *Report { return Run(context.Background(), e, opts) }

func TestAuditStatuses(t *testing.T) {
	const refused = "111"
	connect := func(n int, ago time.Duration) string {
		return outage(n, ago, refused, "AH01974", "could not connect to OCSP responder 'ocsp.example.net'")
	}
	offBlock, _ := apacheconf.ApplyBlock(nil)
	mixedHTTPD := wiredHTTPD + "<VirtualHost *:443>\nServerName b.example\nSSLEngine on\nSSLUseStapling on\n</VirtualHost>\n"
	cases := []struct {
		name, httpd, include, log string
		journalDoneAgo            time.Duration // >0: a remediation finished this long ago
		status                    Status
		total, after              int
		actions                   []string
	}{
		{name: "outage with stapling on", httpd: wiredHTTPD, log: connect(4, 5*time.Minute) + forgedLines,
			status: Critical, total: 4, actions: []string{"remediate"}},
		{name: "failures below threshold", httpd: wiredHTTPD, log: connect(2, 5*time.Minute),
			status: Warning, total: 2},
		{name: "spread out failures never reach threshold", httpd: wiredHTTPD,
			log:    connect(1, 50*time.Minute) + connect(1, 35*time.Minute) + connect(1, 20*time.Minute) + connect(1, 5*time.Minute),
			status: Warning, total: 4},
		{name: "older than the window", httpd: wiredHTTPD, log: connect(5, 30*time.Hour),
			status: OK},
		{name: "no failures, only forged lines", httpd: wiredHTTPD, log: forgedLines,
			status: OK},
		{name: "fixed by us before the failures stopped", httpd: wiredHTTPD, include: string(offBlock), log: connect(4, 20*time.Minute),
			journalDoneAgo: 10 * time.Minute, status: OK, total: 4},
		{name: "failures continue after our fix", httpd: wiredHTTPD, include: string(offBlock), log: connect(4, 5*time.Minute),
			journalDoneAgo: 7*time.Minute + 30*time.Second, status: Warning, total: 4, after: 3, actions: []string{"investigate"}},
		{name: "mixed", httpd: mixedHTTPD, include: string(offBlock), log: "",
			status: Warning, actions: []string{"review_override"}},
		{name: "include not wired", httpd: "SSLUseStapling on\n", log: "",
			status: Warning, actions: []string{"rebuild"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, e := auditFixture(t, c.httpd, c.include, c.log)
			if c.journalDoneAgo > 0 {
				e.State.Ensure()
				e.State.Append(state.Entry{Time: auditNow.Add(-c.journalDoneAgo), Action: state.Remediate, Step: state.Done, File: ea4Include})
			}
			r := runAudit(e)
			var acts []string
			for _, a := range r.Actions {
				acts = append(acts, string(a.Action))
			}
			if r.Status != c.status || r.Failures.Total != c.total || r.Failures.AfterRemediation != c.after ||
				strings.Join(acts, ",") != strings.Join(c.actions, ",") {
				t.Fatalf("status %s total %d after %d actions %v; want %s %d %d %v\nsummary: %s",
					r.Status, r.Failures.Total, r.Failures.AfterRemediation, acts, c.status, c.total, c.after, c.actions, r.Summary)
			}
		})
	}
}

func TestAuditCausesAndEvents(t *testing.T) {
	log := outage(1, 20*time.Minute, "EAI 2", "AH01972", "could not resolve address of OCSP responder ocsp.b.example") +
		outage(2, 3*time.Minute, "70007", "AH01974", "could not connect to OCSP responder 'ocsp.a.example'") +
		fmt.Sprintf("[%s] [ssl:error] [pid 7] AH02969: stapling_check_response: response has certificate status revoked (reason: keyCompromise) for serial number 0A\n", logStamp(time.Minute)) +
		fmt.Sprintf("[%s] [ssl:error] [pid 8] AH02218: ssl_stapling_init_cert: no OCSP URI in certificate and no SSLStaplingForceURL set [subject: CN=a]\n", logStamp(time.Minute)) +
		fmt.Sprintf("[%s] [ssl:error] [pid 8] AH02604: Unable to configure certificate a:443:0 for stapling\n", logStamp(time.Minute))
	httpd := wiredHTTPD
	for _, n := range []string{"a", "b"} {
		httpd += fmt.Sprintf("<VirtualHost *:443>\nServerName %s.example\nSSLEngine on\nSSLCertificateFile /etc/apache2/ssl/%s.combined\n</VirtualHost>\n", n, n)
	}
	h, e := auditFixture(t, httpd, "", log)
	fakehost.Write(t, h.Root, "/etc/apache2/ssl/a.combined", fakehost.Cert(t, "a.example", "http://ocsp.a.example/", false))
	fakehost.Write(t, h.Root, "/etc/apache2/ssl/b.combined", fakehost.Cert(t, "b.example", "http://ocsp.b.example/", false))
	r := runAudit(e)
	if r.Failures.Total != 3 || r.Failures.ByCause["connect_timeout"] != 2 || r.Failures.ByCause["dns"] != 1 ||
		r.Failures.ByResponder["ocsp.a.example"] != 2 || r.Failures.ByResponder["ocsp.b.example"] != 1 {
		t.Fatalf("failures %+v", r.Failures)
	}
	if r.CertificateEvents.Total != 1 || r.InitEvents.Total != 2 || r.InitEvents.ByCode["AH02604"] != 1 {
		t.Fatalf("certificate %+v init %+v", r.CertificateEvents, r.InitEvents)
	}
	if r.Failures.MaxInWindow != 2 || r.Policy.WouldAct || r.Status != Warning {
		t.Fatalf("max %d would act %v status %s", r.Failures.MaxInWindow, r.Policy.WouldAct, r.Status)
	}
	if !strings.Contains(r.Summary, "mostly connect_timeout to ocsp.a.example") {
		t.Fatalf("summary %q", r.Summary)
	}
	if len(r.Log.Files) != 1 || r.Log.Files[0] != "/etc/apache2/logs/error_log" {
		t.Fatalf("log files %v: want host paths", r.Log.Files)
	}
}

func TestAuditUnknown(t *testing.T) {
	h, e := auditFixture(t, wiredHTTPD, "", "")
	os.Remove(filepath.Join(h.Root, "var/log/apache2/error_log"))
	if r := runAudit(e); r.Status != Unknown || !strings.Contains(r.Summary, "error log") {
		t.Fatalf("missing log: %s %q", r.Status, r.Summary)
	}
	e.Layout, e.LayoutErr = nil, fmt.Errorf("%w under /x", apacheconf.ErrUnknownLayout)
	if r := runAudit(e); r.Status != Unknown || r.Layout.Kind != "unknown" {
		t.Fatalf("no layout: %+v", r)
	}
}

// An audit window shorter than the policy window still decides on the whole policy window,
// as the daemon's start would.
func TestAuditShortSinceStillDecidesOnThePolicyWindow(t *testing.T) {
	log := outage(3, 6*time.Minute, "111", "AH01974", "could not connect to OCSP responder 'ocsp.example.net'")
	_, e := auditFixture(t, wiredHTTPD, "", log)
	r := Run(context.Background(), e, Options{Since: 5 * time.Minute, Ask: down.Ask})
	if r.Failures.Total != 0 || r.Policy.Decision.Kind != "remediate" || r.Status != Critical {
		t.Fatalf("total %d decision %+v status %s", r.Failures.Total, r.Policy.Decision, r.Status)
	}
}

// A real outage, then blocks of forged lines dated years back and hours ahead appended after
// it (a tenant's CGI writes raw lines): the audit still finds the outage, counts the forged
// lines as skewed, and a one-hour audit's window search is not steered past the outage.
func TestAuditForgedTimeBlocksCannotHideAnOutage(t *testing.T) {
	var forged strings.Builder
	for i := 0; i < 2000; i++ {
		forged.WriteString(fakehost.Failure(auditNow.Add(-3*365*24*time.Hour+time.Duration(i)*time.Second), 9000+i, "ocsp.example.net"))
	}
	for i := 0; i < 2000; i++ {
		forged.WriteString(fakehost.Failure(auditNow.Add(2*time.Hour+time.Duration(i)*time.Second), 9000+i, "ocsp.example.net"))
	}
	noise := ""
	for i := 0; i < 3000; i++ {
		noise += fmt.Sprintf("[%s] [core:error] [pid 11] [client 198.51.100.1:1] AH00126: noise %d\n", logStamp(3*time.Hour-time.Duration(i)*time.Second), i)
	}
	log := noise + outage(4, 5*time.Minute, "111", "AH01974", "could not connect to OCSP responder 'ocsp.example.net'") + forged.String()
	for _, since := range []time.Duration{time.Hour, 24 * time.Hour} {
		_, e := auditFixture(t, wiredHTTPD, "", log)
		o := opts
		o.Since = since
		r := Run(context.Background(), e, o)
		if r.Failures.Total != 4 || r.Policy.Decision.Kind != "remediate" || r.Status != Critical {
			t.Fatalf("--since %s: total %d decision %s status %s: %s", since, r.Failures.Total, r.Policy.Decision.Kind, r.Status, r.Summary)
		}
		// The forged lines fall outside the window (years back, hours ahead): the one-hour
		// search saw them out of order and read the file whole.
		if since == time.Hour && r.Log.Disordered != 1 {
			t.Fatalf("disordered files %d", r.Log.Disordered)
		}
	}
}

// The error log comes from the config: an ErrorLog in pre_main_global.conf makes Apache write
// elsewhere, and the audit reads that file; a custom ErrorLogFormat is reported as the
// directive that stops the audit (status unknown), never as "no failures".
func TestAuditFollowsTheConfiguredErrorLog(t *testing.T) {
	preMain := "/etc/apache2/conf.d/includes/pre_main_global.conf"
	httpd := "ServerRoot /etc/apache2\nInclude " + preMain + "\n" + wiredHTTPD
	log := outage(3, 3*time.Minute, "111", "AH01974", "could not connect to OCSP responder 'ocsp.example.net'")
	h, e := auditFixture(t, httpd, "", "")
	fakehost.Write(t, h.Root, preMain, "ErrorLog logs/ssl_error_log\n")
	fakehost.Write(t, h.Root, "/var/log/apache2/ssl_error_log", log)
	r := runAudit(e)
	if r.Layout.ErrorLog != "/etc/apache2/logs/ssl_error_log" || r.Failures.Total != 3 || r.Status != Critical {
		t.Fatalf("error_log %s, total %d, status %s: %s", r.Layout.ErrorLog, r.Failures.Total, r.Status, r.Summary)
	}
	fakehost.Write(t, h.Root, preMain, "ErrorLogFormat \"[%t] %M\"\n")
	r = runAudit(e)
	if r.Status != Unknown || !strings.Contains(r.Summary, preMain+":1") || !strings.Contains(r.Summary, "ErrorLogFormat") {
		t.Fatalf("custom format: %s: %s", r.Status, r.Summary)
	}
	// An SSL vhost logging in a format of its own is named too: its failures would be missed.
	fakehost.Write(t, h.Root, preMain, "ErrorLog logs/ssl_error_log\n")
	vhostFormat := strings.Replace(httpd, "SSLEngine on\n", "SSLEngine on\nErrorLogFormat \"[%{u}t] [%-m:%l] %M\"\n", 1)
	fakehost.Write(t, h.Root, fakehost.EA4HTTPD, vhostFormat)
	if r = runAudit(e); r.Status != Unknown || !strings.Contains(r.Summary, "sets its own ErrorLogFormat at /etc/apache2/conf/httpd.conf:") {
		t.Fatalf("vhost format: %s: %s", r.Status, r.Summary)
	}
}

// The summary names the responder of the top cause's failures, not the top responder of all
// failures.
func TestAuditSummaryPairsCauseWithItsResponder(t *testing.T) {
	httpd := wiredHTTPD
	for _, n := range []string{"a", "b", "c"} {
		httpd += fmt.Sprintf("<VirtualHost *:443>\nServerName %s.example\nSSLEngine on\nSSLCertificateFile /etc/apache2/ssl/%s.combined\n</VirtualHost>\n", n, n)
	}
	log := outage(1, 30*time.Minute, "EAI 2", "AH01972", "could not resolve address of OCSP responder ocsp.c.example") +
		outage(2, 20*time.Minute, "EAI 2", "AH01972", "could not resolve address of OCSP responder ocsp.c.example") +
		outage(1, 14*time.Minute, "70007", "AH01974", "could not connect to OCSP responder 'ocsp.b.example'") +
		outage(2, 9*time.Minute, "70007", "AH01974", "could not connect to OCSP responder 'ocsp.a.example'") +
		outage(1, 2*time.Minute, "70007", "AH01974", "could not connect to OCSP responder 'ocsp.b.example'")
	h, e := auditFixture(t, httpd, "", log)
	for _, n := range []string{"a", "b", "c"} {
		fakehost.Write(t, h.Root, "/etc/apache2/ssl/"+n+".combined", fakehost.Cert(t, n+".example", "http://ocsp."+n+".example/", false))
	}
	r := runAudit(e)
	if !strings.Contains(r.Summary, "mostly connect_timeout to ocsp.a.example") {
		t.Fatalf("summary: %s (%v)", r.Summary, r.Failures.ByResponder)
	}
}
