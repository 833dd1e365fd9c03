package audit

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// nagiosCase is a report in one of the states issue 15 found the perfdata contradicting, and
// the perfdata it must print.
type nagiosCase struct {
	name   string
	report *Report
	perf   string
}

func nagiosCases() []nagiosCase {
	logOK := []CheckResult{{Name: CheckLayout, Status: "ok"}, {Name: CheckErrorLog, Status: "ok"}}
	rep := func(s Status, total, max, after int, checks []CheckResult) *Report {
		r := &Report{Status: s, Summary: "summary", Checks: checks}
		r.Layout.Kind = apacheconf.KindEA4
		r.Failures.Total, r.Failures.MaxInWindow, r.Failures.AfterRemediation = total, max, after
		r.Failures.ByCause, r.Failures.ByResponder = map[string]int{}, map[string]int{}
		if total > 0 {
			r.Failures.ByCause["connect_refused"], r.Failures.ByResponder["r3.o.lencr.org"] = total, total
		}
		r.Policy.Threshold, r.Policy.Window = 3, "10m"
		r.Policy.Decision = policy.Decision{Kind: policy.None}
		return r
	}
	outage := rep(Critical, 3, 3, 0, logOK)
	outage.Policy.Decision.Kind = policy.Act
	remediated := rep(OK, 40, 20, 0, logOK)
	remediated.Stapling.ManagedBlock, remediated.Stapling.Effective = true, apacheconf.StaplingOff
	notEffective := rep(Warning, 12, 6, 5, logOK)
	notEffective.Policy.Decision.Kind = policy.NotEffective
	return []nagiosCase{
		{"outage", outage, "status=2;0;1;0;2 failures=3;;;0; max_in_window=3;;;0; after_remediation=0;;;0;"},
		// One failure with stapling on: WARNING, and now the thresholds say so too.
		{"one failure", rep(Warning, 1, 1, 0, logOK), "status=1;0;1;0;2 failures=1;;;0; max_in_window=1;;;0; after_remediation=0;;;0;"},
		// Remediated: OK although max_in_window is far above the policy threshold, which is
		// therefore no perfdata threshold.
		{"remediated", remediated, "status=0;0;1;0;2 failures=40;;;0; max_in_window=20;;;0; after_remediation=0;;;0;"},
		{"not effective", notEffective, "status=1;0;1;0;2 failures=12;;;0; max_in_window=6;;;0; after_remediation=5;;;0;"},
		{"clean", rep(OK, 0, 0, 0, logOK), "status=0;0;1;0;2 failures=0;;;0; max_in_window=0;;;0; after_remediation=0;;;0;"},
		// The error log could not be read: the state and the counts are unknown, not 0.
		{"log unreadable", rep(Unknown, 0, 0, 0, []CheckResult{{Name: CheckLayout, Status: "ok"}, {Name: CheckErrorLog, Status: "error", Error: "permission denied"}}),
			"status=U;0;1;0;2 failures=U;;;0; max_in_window=U;;;0; after_remediation=U;;;0;"},
		// The policy-window replay (countSince) failed after the first reading worked.
		{"replay unreadable", rep(Unknown, 2, 2, 0, append(logOK, CheckResult{Name: CheckErrorLog, Status: "error", Error: "gone"})),
			"status=U;0;1;0;2 failures=U;;;0; max_in_window=U;;;0; after_remediation=U;;;0;"},
		{"no layout", rep(Unknown, 0, 0, 0, []CheckResult{{Name: CheckLayout, Status: "error", Error: "no httpd.conf"}}),
			"status=U;0;1;0;2 failures=U;;;0; max_in_window=U;;;0; after_remediation=U;;;0;"},
		// Read, but another server answers on the HTTPS port: the state is unknown, the counts
		// are the log's.
		{"unknown front end", rep(Unknown, 2, 2, 0, logOK), "status=U;0;1;0;2 failures=2;;;0; max_in_window=2;;;0; after_remediation=0;;;0;"},
	}
}

// firstLine splits the plugin output's first line into status word, text and perfdata.
func firstLine(t *testing.T, out string) (word, perf string) {
	t.Helper()
	first, _, _ := strings.Cut(out, "\n")
	head, perf, ok := strings.Cut(first, " | ")
	if !ok || strings.Contains(perf, "|") {
		t.Fatalf("first line has no single \" | \": %q", first)
	}
	word, _, _ = strings.Cut(strings.TrimPrefix(head, "STAPLING "), " - ")
	return word, perf
}

func TestNagiosPerfdataAgreesWithStatus(t *testing.T) {
	for _, tc := range nagiosCases() {
		t.Run(tc.name, func(t *testing.T) {
			word, perf := firstLine(t, render(t, tc.report, Nagios))
			if word != strings.ToUpper(string(tc.report.Status)) || perf != tc.perf {
				t.Fatalf("got %s | %s\nwant %s | %s", word, perf, strings.ToUpper(string(tc.report.Status)), tc.perf)
			}
		})
	}
}

// perfParse is Debian's libmonitoring-plugin-perl reading perfdata the way plugin-aware
// tools do: for each item its label, value, uom, warn, crit, min, max and the state its own
// thresholds give (Monitoring::Plugin::Threshold's get_status). It drops items whose value
// is not a number (the guidelines' U) without a word, so for each U item the test asks the
// library to write the item itself with an empty value and compares ("U" is what its
// perfoutput writes then).
const perfParse = `
use strict; use warnings;
use Monitoring::Plugin::Performance;
my ($perf, @unknown) = @ARGV;
for my $p (Monitoring::Plugin::Performance->parse_perfstring($perf)) {
	print join("\t", "item", map({ defined $_ ? $_ : "" } $p->label, $p->value, $p->uom, $p->warning, $p->critical, $p->min, $p->max),
		$p->threshold->get_status($p->value)), "\n";
}
for my $u (@unknown) {
	my ($label, $warn, $crit, $min, $max) = split /;/, $u, -1;
	my $p = Monitoring::Plugin::Performance->new(label => $label, value => "", warning => $warn, critical => $crit, min => $min, max => $max);
	print "U\t", $p->perfoutput, "\n";
}
`

// needPerlPlugin skips without Debian's libmonitoring-plugin-perl, except in CI.
func needPerlPlugin(t *testing.T) {
	t.Helper()
	if err := exec.Command("perl", "-MMonitoring::Plugin::Performance", "-e", "1").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Monitoring::Plugin::Performance missing in CI (.ci/run installs Debian's libmonitoring-plugin-perl): %v", err)
		}
		t.Skipf("Monitoring::Plugin::Performance not installed (Debian package libmonitoring-plugin-perl): %v", err)
	}
}

// The perfdata checked against the plugin guidelines with their reference implementation:
// every numeric item parses with the label, value, thresholds and min intended; every U item
// is written exactly as the library writes an unknown value; and the worst state the
// thresholds give is the plugin's own state (UNKNOWN: the status item is U, so the
// thresholds give none).
func TestNagiosPerfdataMonitoringPlugin(t *testing.T) {
	needPerlPlugin(t)
	for _, tc := range nagiosCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, perf := firstLine(t, render(t, tc.report, Nagios))
			items := strings.Fields(perf)
			var unknown []string
			want := map[string][]string{}
			for _, it := range items {
				label, rest, _ := strings.Cut(it, "=")
				value, limits, _ := strings.Cut(rest, ";")
				if value == "U" {
					unknown = append(unknown, label+";"+strings.TrimSuffix(limits, ";"))
					continue
				}
				f := strings.Split(limits, ";") // warn, crit, min, max
				want[label] = []string{value, "", f[0], f[1], f[2], f[3]}
			}
			cmd := exec.Command("perl", append([]string{"-e", perfParse, "--", perf}, unknown...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || stderr.Len() > 0 {
				t.Fatalf("perl: %v\n%s", err, &stderr)
			}
			worst, statusParsed, parsed, written := 0, false, 0, 0
			for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
				f := strings.Split(line, "\t")
				switch f[0] {
				case "item":
					parsed++
					label, got, state := f[1], f[2:8], f[8]
					if w, ok := want[label]; !ok || strings.Join(w, "\t") != strings.Join(got, "\t") {
						t.Errorf("%s parsed as %q, want %q (value, uom, warn, crit, min, max)", label, got, w)
					}
					if s := int(state[0] - '0'); s > worst {
						worst = s
					}
					statusParsed = statusParsed || label == "status"
				case "U":
					written++
					// perfoutput drops one trailing ";;" (an empty max): compare without it.
					label, _, _ := strings.Cut(f[1], "=")
					var ours string
					for _, it := range items {
						if strings.HasPrefix(it, label+"=") {
							ours = it
						}
					}
					if strings.TrimRight(ours, ";") != strings.TrimRight(f[1], ";") {
						t.Errorf("U item %q, the library writes %q", ours, f[1])
					}
				}
			}
			if parsed != len(want) || written != len(unknown) || parsed+written != len(items) {
				t.Fatalf("%d items, %d parsed, %d U written, want %d and %d:\n%s", len(items), parsed, written, len(want), len(unknown), out)
			}
			if code := tc.report.Status.Code(); code == 3 {
				if statusParsed {
					t.Errorf("UNKNOWN, yet the status item has a value the thresholds rate")
				}
			} else if worst != code || !statusParsed {
				t.Errorf("thresholds give state %d, the plugin exits %d", worst, code)
			}
		})
	}
}
