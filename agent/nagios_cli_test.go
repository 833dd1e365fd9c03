package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The audit as a Nagios plugin (the plugin guidelines, FACTS.md sections 9 and 16): usage
// and flag errors are UNKNOWN (3) with one "STAPLING UNKNOWN - reason" line on stdout, never
// the CRITICAL a 2 means to Nagios and never an empty output; -V/--version and -t/--timeout.
func TestCLIAuditNagiosUsage(t *testing.T) {
	root := cliHost(t)
	os.MkdirAll(filepath.Join(root, "etc/apache2/logs"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/apache2/logs/error_log"), nil, 0o644)
	for _, tc := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"extra argument", []string{"audit", "--format", "nagios", "extra"}, `audit takes no arguments, not "extra"`},
		{"format forgotten", []string{"audit", "nagios"}, "did you mean --format nagios?"},
		{"unknown flag after", []string{"audit", "--format", "nagios", "--bogus"}, "unknown flag: --bogus"},
		// The flag error stops the parsing before --format is read.
		{"unknown flag before", []string{"audit", "--bogus", "--format", "nagios"}, "unknown flag: --bogus"},
		{"unknown shorthand", []string{"audit", "--format=nagios", "-x"}, "unknown shorthand flag: 'x'"},
		{"bad format", []string{"audit", "--format", "nagois"}, `unknown --format "nagois"`},
		{"bad since", []string{"audit", "--format", "nagios", "--since", "banana"}, `invalid argument "banana" for "--since"`},
		{"negative since", []string{"audit", "--format", "nagios", "--since", "-1h"}, "--since must be positive"},
		{"bad timeout", []string{"audit", "--format", "nagios", "-t", "soon"}, `invalid argument "soon" for "-t, --timeout"`},
		{"missing value", []string{"audit", "--format", "nagios", "--since"}, "flag needs an argument: --since"},
		{"bad root", []string{"--root", filepath.Join(root, "nowhere"), "audit", "--format", "nagios"}, "bad --root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if args[0] == "audit" {
				args = append([]string{"--root", root}, args...)
			}
			r := runAgent(t, nil, args...)
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			if r.code != 3 || len(lines) != 1 || !strings.HasPrefix(lines[0], "STAPLING UNKNOWN - ") || !strings.Contains(lines[0], tc.reason) || !strings.HasSuffix(r.stdout, "\n") {
				t.Fatalf("want exit 3 and one line \"STAPLING UNKNOWN - ...%s...\", got %+v", tc.reason, r)
			}
		})
	}
	// Outside Nagios a usage error is still 3 (nothing was audited), with nothing on stdout
	// for a JSON reader to choke on.
	for _, args := range [][]string{{"audit", "extra"}, {"audit", "--format", "json", "--bogus"}, {"audit", "--format", "json", "--since", "x"}} {
		if r := runAgent(t, nil, append([]string{"--root", root}, args...)...); r.code != 3 || r.stdout != "" || !strings.HasPrefix(r.stderr, "stapling-agent: error: ") {
			t.Errorf("%v: %+v", args, r)
		}
	}

	for _, args := range [][]string{{"audit", "--version"}, {"audit", "-V"}, {"audit", "--format", "nagios", "-V"}, {"--version"}, {"-V"}, {"version"}} {
		r := runAgent(t, nil, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "stapling-agent ") || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("%v: %+v", args, r)
		}
	}

	// -t takes the guidelines' seconds, --timeout a duration as before; a run within the
	// limit is a normal result.
	for _, args := range [][]string{{"-t", "30"}, {"--timeout", "30s"}, {"-t", "0"}} {
		r := runAgent(t, nil, append([]string{"--root", root, "audit", "--format", "nagios"}, args...)...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "STAPLING OK - ") {
			t.Errorf("%v: %+v", args, r)
		}
	}
}

// The real plugin output of an outage, a clean host and an unreadable error log, read by
// Debian's Monitoring::Plugin::Performance: the worst state its thresholds give is the exit
// code, and the unknown counts are U.
func TestCLIAuditNagiosPerfdataParses(t *testing.T) {
	if err := exec.Command("perl", "-MMonitoring::Plugin::Performance", "-e", "1").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Monitoring::Plugin::Performance missing in CI (.ci/run installs libmonitoring-plugin-perl): %v", err)
		}
		t.Skipf("Monitoring::Plugin::Performance not installed (libmonitoring-plugin-perl): %v", err)
	}
	root := cliHost(t)
	logDir := filepath.Join(root, "etc/apache2/logs")
	os.MkdirAll(logDir, 0o755)
	errorLog := filepath.Join(logDir, "error_log")
	// The worst state of the thresholds, "U" when no item with thresholds has a value.
	const worst = `use Monitoring::Plugin::Performance;
my ($w, $n) = (-1, 0);
for my $p (Monitoring::Plugin::Performance->parse_perfstring($ARGV[0])) {
	$n++;
	next unless defined $p->warning && $p->warning ne "";
	my $s = $p->threshold->get_status($p->value);
	$w = $s if $s > $w;
}
print $w < 0 ? "U" : $w, " $n\n";`
	for _, tc := range []struct {
		name, log string
		code      int
		want      string // perl's worst state and how many items it parsed
	}{
		{"outage", outage(3, 2*time.Minute, "111", "AH01974", "could not connect to OCSP responder '127.0.0.1:9'"), 2, "2 4"},
		{"clean", "", 0, "0 4"},
		{"unreadable log", "", 3, "U 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(errorLog)
			if tc.code == 3 {
				os.Mkdir(errorLog, 0o755) // a directory: not a readable error log
			} else {
				os.WriteFile(errorLog, []byte(tc.log), 0o644)
			}
			r := runAgent(t, nil, "--root", root, "audit", "--format", "nagios", "-t", "30")
			first, _, _ := strings.Cut(r.stdout, "\n")
			_, perf, ok := strings.Cut(first, " | ")
			if r.code != tc.code || !ok {
				t.Fatalf("exit %d, want %d: %+v", r.code, tc.code, r)
			}
			out, err := exec.Command("perl", "-e", worst, "--", perf).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != tc.want {
				t.Fatalf("perl on %q: %v %q, want %q", perf, err, out, tc.want)
			}
		})
	}
}
