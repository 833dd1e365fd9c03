package packaging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/audit"
	"github.com/stapling-agent/stapling-agent/agent/frontend"
)

// The monitoring artifacts (packaging/monitoring) and where the packages install them.
const (
	rulesFile     = "monitoring/stapling-agent.rules.yml"
	rulesTestFile = "monitoring/stapling-agent.rules.test.yml"
	dashboardFile = "monitoring/stapling-agent.dashboard.json"
	shareDir      = "/usr/share/stapling-agent/"
)

// daemonCounters are the daemon's own metrics (agent/daemon/metrics.go writes them to
// stapling_agent_daemon.prom in the textfile collector's directory). Named here rather than
// collected because the daemon writes them only while it runs; the rules and the dashboard
// may use these and the audit's metrics, nothing else.
var daemonCounters = []string{
	"stapling_agent_daemon_responder_failures_total", // {cause, responder}
	"stapling_agent_decisions_total",                 // {kind}
	"stapling_agent_remediations_total",              // {result}
}

// exportedMetrics is every metric name the project exports: the audit's textfile, rendered
// from a report that holds every optional part (front end, NGINX, WHM), and daemonCounters.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	r := &audit.Report{Status: audit.Critical, GeneratedAt: time.Unix(1700000000, 0), AgentVersion: "test"}
	r.Failures.ByCause = map[string]int{"connect_refused": 3}
	r.Failures.ByResponder = map[string]int{"r3.o.lencr.org": 3}
	r.Failures.Total = 3
	r.Checks = []audit.CheckResult{{Name: audit.CheckErrorLog, Status: "ok"}}
	r.FrontEnd = &audit.FrontEnd{Frontend: &frontend.Frontend{Server: frontend.ServerNginx}}
	r.Nginx = &audit.NginxReport{}
	r.Nginx.Failures.ByCause = map[string]int{"connect_refused": 1}
	r.Nginx.Failures.ByResponder = map[string]int{"r3.o.lencr.org": 1}
	r.WHM = &audit.WHM{}
	var b bytes.Buffer
	if err := audit.Render(&b, r, audit.Prometheus); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range daemonCounters {
		names[n] = true
	}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) `).FindAllStringSubmatch(b.String(), -1) {
		names[m[1]] = true
	}
	if !names["stapling_agent_audit_status"] || !names["stapling_agent_managed_block"] || !names["stapling_agent_whm_differs"] {
		t.Fatalf("the sample audit's exposition lacks metrics:\n%s", &b)
	}
	return names
}

var (
	promqlStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlNumbers  = regexp.MustCompile(`\b[0-9][0-9a-zA-Z_.]*`)
	promqlWords    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// promqlMetrics is the metric names a PromQL expression selects: the words left once strings,
// label matchers, ranges, grouping label lists and numbers are taken out, other than keywords
// and the names of functions and aggregations (followed by "(").
func promqlMetrics(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	s = promqlNumbers.ReplaceAllString(s, " ")
	var names []string
	for _, m := range promqlWords.FindAllStringSubmatch(s, -1) {
		w := strings.TrimRight(m[0], " \t\n(")
		if m[1] != "" || promqlKeywords[strings.ToLower(w)] {
			continue
		}
		names = append(names, w)
	}
	return names
}

func TestPromQLMetrics(t *testing.T) {
	for expr, want := range map[string]string{
		`count by (responder) (sum by (instance, responder) (increase(a_total{responder!~"x|y"}[15m])) > 0) >= 3`: "a_total",
		`min_over_time(b[3d]) == 1 and b offset 3d == 1`:                                                          "b b",
		`time() - c > 1800`:           "c",
		`d and on (instance) (e > 0)`: "d e",
		`sum without (kind) (rate(f{kind="by (g)"}[$__rate_interval])) or vector(0)`: "f",
		`h{job="node"} * 1e3 + i:rule`: "h i:rule",
	} {
		if got := strings.Join(promqlMetrics(expr), " "); got != want {
			t.Errorf("promqlMetrics(%q) = %q, want %q", expr, got, want)
		}
	}
}

// checkMetrics fails for an expression that names no metric or one the project does not
// export.
func checkMetrics(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	names := promqlMetrics(expr)
	if len(names) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	for _, n := range names {
		if !known[n] {
			t.Errorf("%s: %q names %s, which stapling-agent does not export", where, expr, n)
		}
	}
}

// ruleExprs is each alert of the rules file with its expression (the file's own layout: a
// one-line expr or a "|" block under it).
func ruleExprs(t *testing.T, text string) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	lines := strings.Split(text, "\n")
	alert := ""
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(l, "- alert: "):
			alert = strings.TrimPrefix(l, "- alert: ")
		case l == "expr: |":
			indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
			var block []string
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > indent) {
				i++
				block = append(block, lines[i])
			}
			exprs[alert] = strings.Join(block, "\n")
		case strings.HasPrefix(l, "expr: "):
			exprs[alert] = strings.TrimPrefix(l, "expr: ")
		}
	}
	return exprs
}

// readmeAnchors is the GitHub anchors of the README's headings ("### Runbook: CA outage" is
// #runbook-ca-outage).
func readmeAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(b), -1) {
		a := strings.ToLower(strings.TrimSpace(m[1]))
		a = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(a, "")
		anchors[strings.ReplaceAll(a, " ", "-")] = true
	}
	return anchors
}

const runbookBase = "https://github.com/stapling-agent/stapling-agent/blob/main/README.md#"

// The alerting rules: promtool checks them and runs their unit tests (each alert fires on
// its state and stays quiet on the near misses); every alert has a severity and a runbook
// link to a README section that exists, and names only metrics we export.
func TestAlertRules(t *testing.T) {
	need(t, "promtool")
	run(t, "", nil, "promtool", "check", "rules", rulesFile)
	out := run(t, "monitoring", nil, "promtool", "test", "rules", filepath.Base(rulesTestFile))
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	b, _ := os.ReadFile(rulesFile)
	text := string(b)
	known, anchors := exportedMetrics(t), readmeAnchors(t)
	exprs := ruleExprs(t, text)
	want := map[string]string{ // alert: runbook anchor
		"StaplingAgentOutage":                  "runbook-outage",
		"StaplingAgentRemediationNotEffective": "runbook-not-effective",
		"StaplingAgentAuditStale":              "runbook-stale-audit",
		"StaplingAgentStaplingOffLong":         "runbook-stapling-off",
		"StaplingAgentResponderDownFleetWide":  "runbook-ca-outage",
	}
	if len(exprs) != len(want) {
		t.Errorf("alerts %v, want %d", exprs, len(want))
	}
	tested, _ := os.ReadFile(rulesTestFile)
	for _, block := range strings.Split(text, "- alert: ")[1:] {
		name, _, _ := strings.Cut(block, "\n")
		anchor, ok := want[name]
		if !ok {
			t.Errorf("unexpected alert %s", name)
			continue
		}
		if !regexp.MustCompile(`\n\s+severity: (critical|warning)\n`).MatchString(block) {
			t.Errorf("%s has no severity critical or warning", name)
		}
		if !strings.Contains(block, "runbook_url: \""+runbookBase+anchor+"\"\n") {
			t.Errorf("%s has no runbook_url %s%s", name, runbookBase, anchor)
		}
		if !anchors[anchor] {
			t.Errorf("%s: the README has no section #%s", name, anchor)
		}
		if !strings.Contains(string(tested), "alertname: "+name+"\n") {
			t.Errorf("%s has no unit test in %s", name, rulesTestFile)
		}
		checkMetrics(t, name, exprs[name], known)
	}
}

// dashboardExprs is every PromQL expression of the dashboard: panel targets (rows' nested
// panels too) and query variables.
func dashboardExprs(t *testing.T, d map[string]any) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	var panels func(prefix string, ps []any)
	panels = func(prefix string, ps []any) {
		for _, p := range ps {
			p := p.(map[string]any)
			title, _ := p["title"].(string)
			if nested, ok := p["panels"].([]any); ok {
				panels(prefix+title+"/", nested)
			}
			if p["type"] == "row" {
				continue
			}
			targets, _ := p["targets"].([]any)
			if len(targets) == 0 {
				t.Errorf("panel %q has no queries", prefix+title)
			}
			for _, tg := range targets {
				tg := tg.(map[string]any)
				expr, _ := tg["expr"].(string)
				if expr == "" {
					t.Errorf("panel %q: target without expr: %v", prefix+title, tg)
				}
				exprs[fmt.Sprintf("panel %q target %v", prefix+title, tg["refId"])] = expr
			}
		}
	}
	ps, _ := d["panels"].([]any)
	panels("", ps)
	if tmpl, ok := d["templating"].(map[string]any); ok {
		list, _ := tmpl["list"].([]any)
		for _, v := range list {
			v := v.(map[string]any)
			if v["type"] == "query" {
				q, _ := v["query"].(string)
				if m, ok := v["query"].(map[string]any); ok {
					q, _ = m["query"].(string)
				}
				exprs[fmt.Sprintf("variable %v", v["name"])] = q
			}
		}
	}
	return exprs
}

// The Grafana dashboard is valid JSON with the panels the issue asks for, and each query is
// PromQL that promtool accepts and that names only metrics we export.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	if d["uid"] != "stapling-agent-fleet" || d["title"] == "" || d["schemaVersion"] == nil {
		t.Errorf("dashboard uid %v, title %v, schemaVersion %v", d["uid"], d["title"], d["schemaVersion"])
	}
	for _, title := range []string{`"Fleet status"`, `"Failures by responder"`, `"Decisions over time"`, `"Hosts failing, by responder"`, `"Decisions, by kind"`} {
		if !bytes.Contains(b, []byte(`"title": `+title)) {
			t.Errorf("dashboard has no %s", title)
		}
	}
	known := exportedMetrics(t)
	exprs := dashboardExprs(t, d)
	if len(exprs) < 8 {
		t.Fatalf("%d queries: %v", len(exprs), exprs)
	}
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Grafana's own variables stand for a range when promtool parses the query.
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, k := range keys {
		checkMetrics(t, k, exprs[k], known)
		q, _ := json.Marshal(grafanaVars.Replace(exprs[k])) // a JSON string is a YAML one
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	need(t, "promtool")
	p := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	os.WriteFile(p, []byte(rules.String()), 0o644)
	if out, err := exec.Command("promtool", "check", "rules", p).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s\n%s", err, out, rules.String())
	}
}

// Both packages install the rules and the dashboard under /usr/share/stapling-agent/, as
// shipped here, world-readable.
func TestPackagesShipMonitoring(t *testing.T) {
	packages(t)
	flags := run(t, "", nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEMODES:perms}\n]`, built.v1)
	for _, f := range []string{rulesFile, dashboardFile} {
		dst := shareDir + filepath.Base(f)
		if !strings.Contains(flags, dst+" -rw-r--r--\n") {
			t.Errorf("RPM lacks %s -rw-r--r--:\n%s", dst, flags)
		}
		sameFile(t, "RPM", f, filepath.Join(built.extract, dst))
	}
	if !strings.Contains(flags, strings.TrimSuffix(shareDir, "/")+" drwxr-xr-x\n") {
		t.Errorf("RPM does not own %s", shareDir)
	}

	need(t, "dpkg-deb")
	dist := t.TempDir()
	cmd := exec.Command("../scripts/package.sh", "deb")
	cmd.Env = append(os.Environ(), "VERSION=0.1.0", "RELEASE=1", "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("package.sh deb: %v\n%s", err, out)
	}
	deb := filepath.Join(dist, "stapling-agent_0.1.0-1_amd64.deb")
	list := run(t, "", nil, "dpkg-deb", "--contents", deb)
	extract := filepath.Join(dist, "extract")
	run(t, "", nil, "dpkg-deb", "--extract", deb, extract)
	for _, f := range []string{rulesFile, dashboardFile} {
		dst := shareDir + filepath.Base(f)
		if !regexp.MustCompile(`(?m)^-rw-r--r-- root/root .* \.` + regexp.QuoteMeta(dst) + `$`).MatchString(list) {
			t.Errorf(".deb lacks %s -rw-r--r-- root/root:\n%s", dst, list)
		}
		sameFile(t, ".deb", f, filepath.Join(extract, dst))
	}
}

func sameFile(t *testing.T, pkg, src, installed string) {
	t.Helper()
	want, _ := os.ReadFile(src)
	got, err := os.ReadFile(installed)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: %s differs from %s (%v)", pkg, installed, src, err)
	}
}
