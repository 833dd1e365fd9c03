package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

func auditFixture(t *testing.T, httpd, include, errorLog string) (*fixture, auditInput) {
	t.Helper()
	files := map[string]string{ea4HTTPD: httpd, "/var/log/apache2/error_log": errorLog}
	if include != "" {
		files[ea4Include] = include
	}
	f := newFixture(t, "ea4", files)
	os.MkdirAll(filepath.Join(f.root, filepath.Dir(ea4Include)), 0o755)
	// EA4's logs directory is a relative symlink.
	if err := os.Symlink("../../var/log/apache2", filepath.Join(f.root, "etc/apache2/logs")); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(newViper(), filepath.Join(f.root, "absent"), false)
	if err != nil {
		t.Fatal(err)
	}
	return f, auditInput{root: f.root, cfg: c, layout: f.layout, state: f.r.State, now: auditNow, since: 24 * time.Hour, host: "h"}
}

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
		status                    string
		total, after              int
		actions                   []string
	}{
		{name: "outage with stapling on", httpd: wiredHTTPD, log: connect(4, 5*time.Minute) + forgedLines,
			status: StatusCritical, total: 4, actions: []string{"remediate"}},
		{name: "failures below threshold", httpd: wiredHTTPD, log: connect(2, 5*time.Minute),
			status: StatusWarning, total: 2},
		{name: "spread out failures never reach threshold", httpd: wiredHTTPD,
			log:    connect(1, 50*time.Minute) + connect(1, 35*time.Minute) + connect(1, 20*time.Minute) + connect(1, 5*time.Minute),
			status: StatusWarning, total: 4},
		{name: "older than the window", httpd: wiredHTTPD, log: connect(5, 30*time.Hour),
			status: StatusOK},
		{name: "no failures, only forged lines", httpd: wiredHTTPD, log: forgedLines,
			status: StatusOK},
		{name: "fixed by us before the failures stopped", httpd: wiredHTTPD, include: string(offBlock), log: connect(4, 20*time.Minute),
			journalDoneAgo: 10 * time.Minute, status: StatusOK, total: 4},
		{name: "failures continue after our fix", httpd: wiredHTTPD, include: string(offBlock), log: connect(4, 5*time.Minute),
			journalDoneAgo: 7*time.Minute + 30*time.Second, status: StatusWarning, total: 4, after: 3, actions: []string{"investigate"}},
		{name: "mixed", httpd: mixedHTTPD, include: string(offBlock), log: "",
			status: StatusWarning, actions: []string{"review_override"}},
		{name: "include not wired", httpd: "SSLUseStapling on\n", log: "",
			status: StatusWarning, actions: []string{"rebuild"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, in := auditFixture(t, c.httpd, c.include, c.log)
			if c.journalDoneAgo > 0 {
				f.r.State.Ensure()
				f.r.State.Append(JournalEntry{Time: auditNow.Add(-c.journalDoneAgo), Action: "remediate", Step: "done", File: ea4Include})
			}
			r := runAudit(in)
			var acts []string
			for _, a := range r.Actions {
				acts = append(acts, a.Action)
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
	log := outage(2, 3*time.Minute, "70007", "AH01974", "could not connect to OCSP responder 'ocsp.a.example'") +
		outage(1, 20*time.Minute, "EAI 2", "AH01972", "could not resolve address of OCSP responder ocsp.b.example") +
		fmt.Sprintf("[%s] [ssl:error] [pid 7] AH02969: stapling_check_response: response has certificate status revoked (reason: keyCompromise) for serial number 0A\n", logStamp(time.Minute)) +
		fmt.Sprintf("[%s] [ssl:error] [pid 8] AH02218: ssl_stapling_init_cert: no OCSP URI in certificate and no SSLStaplingForceURL set [subject: CN=a]\n", logStamp(time.Minute)) +
		fmt.Sprintf("[%s] [ssl:error] [pid 8] AH02604: Unable to configure certificate a:443:0 for stapling\n", logStamp(time.Minute))
	_, in := auditFixture(t, wiredHTTPD, "", log)
	r := runAudit(in)
	if r.Failures.Total != 3 || r.Failures.ByCause["connect_timeout"] != 2 || r.Failures.ByCause["dns"] != 1 ||
		r.Failures.ByResponder["ocsp.a.example"] != 2 || r.Failures.ByResponder["ocsp.b.example"] != 1 {
		t.Fatalf("failures %+v", r.Failures)
	}
	if r.CertificateEvents.Total != 1 || r.InitEvents.Total != 2 || r.InitEvents.ByCode["AH02604"] != 1 {
		t.Fatalf("certificate %+v init %+v", r.CertificateEvents, r.InitEvents)
	}
	if r.Failures.MaxInWindow != 2 || r.Policy.WouldAct || r.Status != StatusWarning {
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
	_, in := auditFixture(t, wiredHTTPD, "", "")
	os.Remove(filepath.Join(in.root, "var/log/apache2/error_log"))
	if r := runAudit(in); r.Status != StatusUnknown || !strings.Contains(r.Summary, "error log") {
		t.Fatalf("missing log: %s %q", r.Status, r.Summary)
	}
	in.layout, in.layoutEr = nil, fmt.Errorf("%w under /x", apacheconf.ErrUnknownLayout)
	if r := runAudit(in); r.Status != StatusUnknown || r.Layout.Kind != "unknown" {
		t.Fatalf("no layout: %+v", r)
	}
}

// The CLI: exit codes follow the status, JSON keeps its documented shape, Nagios and
// Prometheus outputs parse, --output writes atomically, and nothing else changes.
func TestCLIAudit(t *testing.T) {
	root := cliHost(t)
	os.MkdirAll(filepath.Join(root, "etc/apache2"), 0o755)
	os.MkdirAll(filepath.Join(root, "var/log/apache2"), 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	os.WriteFile(filepath.Join(root, "var/log/apache2/error_log"),
		[]byte(outage(3, 2*time.Minute, "111", "AH01974", "could not connect to OCSP responder '127.0.0.1:8888'")+forgedLines), 0o644)
	before := snapshotTree(t, root)

	r := runAgent(t, nil, "--root", root, "audit", "--format", "json")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2 (critical): %s", r.code, r.stderr)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "host", "generated_at", "agent_version", "status", "summary", "layout", "window",
		"log", "failures", "certificate_events", "init_events", "stapling", "actions"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	fails := doc["failures"].(map[string]any)
	if doc["schema"] != AuditSchema || doc["status"] != "critical" || fails["total"] != 3.0 ||
		fails["by_cause"].(map[string]any)["connect_refused"] != 3.0 || fails["by_responder"].(map[string]any)["127.0.0.1:8888"] != 3.0 {
		t.Fatalf("JSON: %s", r.stdout)
	}

	r = runAgent(t, nil, "--root", root, "audit", "--format", "nagios")
	first := strings.SplitN(r.stdout, "\n", 2)[0]
	if r.code != 2 || !regexp.MustCompile(`^STAPLING CRITICAL - [^|]+ \| failures=3;1;3;0; max_in_window=3;;;0;$`).MatchString(first) {
		t.Fatalf("nagios: %d %q", r.code, first)
	}

	prom := filepath.Join(t.TempDir(), "stapling_agent.prom")
	r = runAgent(t, nil, "--root", root, "audit", "--format", "prometheus", "--output", prom)
	data, err := os.ReadFile(prom)
	if r.code != 2 || err != nil || r.stdout != "" {
		t.Fatalf("prometheus: %+v %v", r, err)
	}
	sample := regexp.MustCompile(`^stapling_agent_[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? -?[0-9.e+]+$`)
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.HasPrefix(line, "# ") && !sample.MatchString(line) {
			t.Errorf("bad exposition line %q", line)
		}
	}
	if !strings.Contains(string(data), "stapling_agent_audit_status 2\n") {
		t.Error("no status metric")
	}
	if entries, _ := os.ReadDir(filepath.Dir(prom)); len(entries) != 1 {
		t.Fatalf("--output left other files: %v", entries)
	}

	if after := snapshotTree(t, root); after != before {
		t.Fatal("audit changed the host tree")
	}
	if standins(t, root) != "" {
		t.Fatal("audit ran a command")
	}

	if r := runAgent(t, nil, "--root", t.TempDir(), "audit", "--format", "json"); r.code != 3 || !strings.Contains(r.stdout, `"status": "unknown"`) {
		t.Fatalf("unknown layout: %+v", r)
	}
	if r := runAgent(t, nil, "--root", root, "audit", "--since", "banana"); r.code != 3 {
		t.Fatalf("bad flag: %+v", r)
	}
}
