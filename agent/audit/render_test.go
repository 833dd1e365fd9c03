package audit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// bigName is a 10 KB responder name; two of them differ only after the first 128 bytes, so
// they clip to the same label value.
var bigName = strings.Repeat("A", 10<<10)

// hostileResponders are what a tenant's certificates and forged log lines can make the
// report hold: the exposition format's and Nagios's syntax, terminal escapes, control
// bytes, invalid UTF-8, a responder calling itself "other", and 50 distinct names in all.
func hostileResponders() map[string]int {
	specials := []string{
		`evil"quote`,
		`back\slash\`,
		"new\nline\r\n",
		`{a="b",c=d}`,
		"\x1b[2J\x1b]0;pwned\x07title",
		"bad\xff\xfe\xc3utf8",
		"nul\x00del\x7f",
		"ocsp|pipe=1;2;3",
		"\u009b31mc1",
		"tab\tname",
		"other",
		bigName + "1",
		bigName + "2",
	}
	m := map[string]int{}
	for i, s := range specials {
		m[s] = 100 - i
	}
	for i := len(specials); i < 50; i++ {
		m[fmt.Sprintf("ocsp%02d.example.net", i)] = 1 + i%3
	}
	return m
}

func hostileReport() *Report {
	evil := "\x1b[31m|x\r\ny\x00\x7f\xff" + bigName
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	r := &Report{Schema: Schema, Host: "web1|\x1b[1mhost", GeneratedAt: now, AgentVersion: "1.0\"\n\\", Status: Critical}
	r.Summary = "54 OCSP responder failures in the last 24h, mostly connect_timeout to " + evil + "; stapling is on | perf=1"
	r.Layout.Kind = apacheconf.KindEA4
	r.Layout.HTTPDConf = "/etc/apache2/conf/httpd.conf\x1b[2J"
	r.Layout.IncludeFile = "/etc/apache2/conf.d/includes/pre|virtualhost\x1b.conf"
	r.Layout.ErrorLog = "/etc/apache2/logs/error_log\n|x"
	r.Window.Since, r.Window.Until = now.Add(-24*time.Hour), now
	r.Failures.ByResponder = hostileResponders()
	r.Failures.ByCause = map[string]int{"connect_timeout": 50, "evil|\x1b[0mcause\n": 4}
	for _, n := range r.Failures.ByResponder {
		r.Failures.Total += n
	}
	r.Failures.First, r.Failures.Last = &r.Window.Since, &now
	r.Failures.MaxInWindow = 20
	r.CertificateEvents = EventSummary{Total: 1, ByCode: map[string]int{"AH02218\x1b[5m|": 1},
		Examples: []EventExample{{Time: now, Code: "AH02218", Detail: evil}}}
	r.InitEvents = EventSummary{Total: 1, ByCode: map[string]int{"AH02217": 1}, Examples: []EventExample{{Time: now, Code: "AH02217", Detail: evil}}}
	r.Stapling.Effective, r.Stapling.Global, r.Stapling.GlobalAt = apacheconf.StaplingMixed, "on\x1b", "/etc/apache2/conf/httpd.conf:7|"
	r.Stapling.Overrides = []Override{{File: "/etc/apache2/conf/httpd.conf\x1b", Line: 3, VHost: evil, Value: "on\x07"}}
	r.Policy.Threshold, r.Policy.Window = 3, "5m\x1b|"
	r.Policy.Decision = policy.Decision{Kind: policy.Refused, Reason: "refused: Must-Staple certificate for " + evil}
	r.Actions = []Action{{Action: ActReviewOverride, Target: "/etc/apache2/conf/httpd.conf:3\x1b|", Reason: "vhost " + evil + " turns stapling on itself"}}
	r.Checks = []CheckResult{{Name: CheckApacheConfig, Status: "error", Error: "read " + evil + ": line 3\nsecond line"}}
	return r
}

func render(t *testing.T, r *Report, f Format) string {
	t.Helper()
	var buf bytes.Buffer
	if err := Render(&buf, r, f); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// assertTerminalSafe: no control byte but the newline ending each line, no DEL, so nothing
// in the output can move a cursor, set a title or recolour a terminal, and valid UTF-8.
func assertTerminalSafe(t *testing.T, out string) {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("output does not end in a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		for j := 0; j < len(line); j++ {
			if c := line[j]; c < 0x20 || c == 0x7f {
				t.Errorf("line %d has byte %#02x at %d: %q", i+1, c, j, line)
			}
		}
		if !utf8.ValidString(line) {
			t.Errorf("line %d is not valid UTF-8: %q", i+1, line)
		}
		if strings.Contains(line, "\u009b") {
			t.Errorf("line %d has a C1 CSI: %q", i+1, line)
		}
		// The longest legitimate line is a prose line with its prefix; escaping can make a
		// clipped 128-byte name 4 times longer, but never a 10 KB one.
		if len(line) > maxProse+64 {
			t.Errorf("line %d is %d bytes long: %.200q...", i+1, len(line), line)
		}
	}
}

func TestRenderTextHostile(t *testing.T) {
	out := render(t, hostileReport(), Text)
	assertTerminalSafe(t, out)
	for _, want := range []string{
		"  by responder  evil\"quote=100, back\\slash\\=99, new line=98, {a=\"b\",c=d}=97, \\x1b[2J\\x1b]0;pwned\\x07title=96 and 45 more\n",
		"…(10254 bytes) stapling is on",
		`\xff`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderNagiosHostile(t *testing.T) {
	out := render(t, hostileReport(), Nagios)
	assertTerminalSafe(t, out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	first := regexp.MustCompile(`^STAPLING (OK|WARNING|CRITICAL|UNKNOWN) - [^|]* \| status=([0-2]|U);0;1;0;2 failures=([0-9]+|U);;;0; max_in_window=([0-9]+|U);;;0; after_remediation=([0-9]+|U);;;0;$`)
	if !first.MatchString(lines[0]) {
		t.Errorf("first line %q does not match %s", lines[0], first)
	}
	// A "|" in a detail line would start perfdata too (Nagios's long output takes perfdata
	// after a "|" on any line).
	for i, line := range lines[1:] {
		if strings.Contains(line, "|") {
			t.Errorf("detail line %d has a '|': %q", i+2, line)
		}
	}
	if !strings.Contains(out, "and 45 more") {
		t.Errorf("no \"and 45 more\":\n%s", out)
	}
	if !strings.Contains(out, "…(10254 bytes) stapling is on / perf=1 | ") {
		t.Errorf("the 10 KB name is not cut, or the summary's \"|\" kept:\n%s", out)
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"short", "short"},
		{strings.Repeat("x", maxValue), strings.Repeat("x", maxValue)},
		{strings.Repeat("x", maxValue+1), strings.Repeat("x", maxValue-len("…(129 bytes)")) + "…(129 bytes)"},
		// "é" is 2 bytes: the cut backs off to a rune start instead of splitting one.
		{"y" + strings.Repeat("é", 100), "y" + strings.Repeat("é", 56) + "…(201 bytes)"},
	} {
		got := clip(tc.in)
		if got != tc.want || len(got) > maxValue || !utf8.ValidString(got) {
			t.Errorf("clip(%.20q... %d bytes) = %q (%d bytes), want %q", tc.in, len(tc.in), got, len(got), tc.want)
		}
	}
}

func TestCounts(t *testing.T) {
	m := map[string]int{"b": 2, "a": 2, "c": 5, "d": 1, "e": 1, "f": 1, "g": 1}
	if got, want := counts(m, 5), "c=5, a=2, b=2, d=1, e=1 and 2 more"; got != want {
		t.Errorf("counts = %q, want %q", got, want)
	}
	if got, want := counts(map[string]int{"x": 1}, 5), "x=1"; got != want {
		t.Errorf("counts = %q, want %q", got, want)
	}
}

var seriesLine = regexp.MustCompile(`(?m)^stapling_agent_responder_failures_by_responder\{responder="((?:[^"\\\n]|\\[\\"n])*)"\} ([0-9]+)$`)

func TestRenderPrometheusHostile(t *testing.T) {
	r := hostileReport()
	out := render(t, r, Prometheus)
	if !utf8.ValidString(out) {
		t.Error("exposition is not valid UTF-8")
	}
	series := seriesLine.FindAllStringSubmatch(out, -1)
	if n := strings.Count(out, "\nstapling_agent_responder_failures_by_responder{"); len(series) != 11 || n != 11 {
		t.Errorf("%d well-formed by-responder series of %d, want 11:\n%s", len(series), n, out)
	}
	seen, sum := map[string]bool{}, 0
	for _, s := range series {
		if seen[s[1]] {
			t.Errorf("duplicate series responder=%q", s[1])
		}
		seen[s[1]] = true
		if len(s[1]) > 2*maxValue { // escaping at most doubles the clipped value
			t.Errorf("label value of %d bytes", len(s[1]))
		}
		var n int
		fmt.Sscan(s[2], &n)
		sum += n
	}
	if sum != r.Failures.Total {
		t.Errorf("by-responder series sum to %d, want %d (the total)", sum, r.Failures.Total)
	}
	// The top ten by count; the two 10 KB names clip to one value and add up; "other" is the
	// rest, with the responder that calls itself "other".
	for _, want := range []string{
		`responder="evil\"quote"} 100`,
		`responder="back\\slash\\"} 99`,
		`responder="new\nline` + "\r" + `\n"} 98`,
		`responder="bad` + "\uFFFD" + `utf8"} 95`,
		`responder="AAAA`,
		`…(10241 bytes)"} 177`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	promtoolCheck(t, out)
}

// An audit that found no layout has no failures, checks or causes to label.
func TestRenderPrometheusUnknown(t *testing.T) {
	r := &Report{Status: Unknown, Summary: "no cPanel Apache layout found", Checks: []CheckResult{{Name: CheckLayout, Status: "error", Error: "x"}}}
	out := render(t, r, Prometheus)
	if strings.Contains(out, "stapling_agent_responder_failures_by_responder{") {
		t.Errorf("by-responder series without failures:\n%s", out)
	}
	promtoolCheck(t, out)
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus package) over the
// exposition: the parser node_exporter's textfile collector uses would drop the whole file on
// one bad line.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool missing in CI (.ci/run installs Debian's prometheus package)")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err != nil || strings.Contains(strings.ToLower(stdout.String()+stderr.String()), "error") {
		t.Fatalf("promtool check metrics: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
}

// cPanel's own per-vhost `SSLUseStapling off` (every vhost on an AutoSSL-only host) is counted
// in the text report; a vhost that turns stapling back on is named.
func TestRenderTextCountsCPanelsPerVhostOff(t *testing.T) {
	r := &Report{Status: OK}
	r.Layout.Kind = "ea4"
	for i := 0; i < 300; i++ {
		r.Stapling.Overrides = append(r.Stapling.Overrides, Override{File: "/etc/apache2/conf/httpd.conf", Line: 100 + i, VHost: fmt.Sprintf("site%d.example", i), Value: "off"})
	}
	r.Stapling.Overrides = append(r.Stapling.Overrides, Override{File: "/etc/apache2/conf.d/x.conf", Line: 3, VHost: "on.example", Value: "on"})
	var b strings.Builder
	if err := Render(&b, r, Text); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "300 vhosts set SSLUseStapling off themselves") || strings.Contains(out, "site7.example") ||
		!strings.Contains(out, "vhost on.example sets SSLUseStapling on at /etc/apache2/conf.d/x.conf:3") {
		t.Fatalf("text:\n%s", out)
	}
}
