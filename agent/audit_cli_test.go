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

	"github.com/stapling-agent/stapling-agent/agent/audit"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
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

// The CLI: exit codes follow the status, JSON keeps its documented shape, Nagios and
// Prometheus outputs parse, --output writes atomically, and nothing else changes.
func TestCLIAudit(t *testing.T) {
	root := cliHost(t)
	os.MkdirAll(filepath.Join(root, "etc/apache2"), 0o755)
	os.MkdirAll(filepath.Join(root, "var/log/apache2"), 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	os.WriteFile(filepath.Join(root, "var/log/apache2/error_log"),
		[]byte(outage(3, 2*time.Minute, "111", "AH01974", "could not connect to OCSP responder '127.0.0.1:9'")+forgedLines), 0o644)
	before := fakehost.SnapshotTree(t, root)

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
	if doc["schema"] != audit.Schema || doc["status"] != "critical" || fails["total"] != 3.0 ||
		fails["by_cause"].(map[string]any)["connect_refused"] != 3.0 || fails["by_responder"].(map[string]any)["127.0.0.1:9"] != 3.0 {
		t.Fatalf("JSON: %s", r.stdout)
	}

	r = runAgent(t, nil, "--root", root, "audit", "--format", "nagios")
	first := strings.SplitN(r.stdout, "\n", 2)[0]
	if r.code != 2 || !regexp.MustCompile(`^STAPLING CRITICAL - [^|]+ \| status=2;0;1;0;2 failures=3;;;0; max_in_window=3;;;0; after_remediation=0;;;0;$`).MatchString(first) {
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

	if after := fakehost.SnapshotTree(t, root); after != before {
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
