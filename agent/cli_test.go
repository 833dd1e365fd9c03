package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/config"

	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/testguard"
)

// agentBin is the stapling-agent binary built once for the CLI tests.
var agentBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	// The fleet spread (policy.spread, up to 60 s before a remediation) would outlast every
	// end-to-end wait; its own tests are in the daemon package.
	os.Setenv("STAPLING_AGENT_POLICY_SPREAD", "0s")
	g, err := testguard.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "stapling-agent-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Chmod(dir, 0o755) // the bad-input tests run it as nobody too
	agentBin = filepath.Join(dir, "stapling-agent")
	args := []string{"build", "-o", agentBin}
	if dir := os.Getenv("STAPLING_AGENT_COVERDIR"); dir != "" {
		// Coverage of the CLI as the tests run it, merged with the packages' own (.ci/run):
		// every run of the binary writes its counters to GOCOVERDIR. (go test sets GOCOVERDIR
		// for this process to a directory of its own, which nobody can write to.)
		args = append(args, "-cover", "-covermode=atomic", "-coverpkg=github.com/stapling-agent/stapling-agent/...")
		if err := os.Setenv("GOCOVERDIR", dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	build := exec.Command("go", append(args, "../agent/cmd/stapling-agent")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build stapling-agent: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if err := g.Finish(); err != nil {
		fmt.Fprintf(os.Stderr, "testguard: the tests left things behind:\n%s\n", err)
		return 1
	}
	return code
}

type result struct {
	code           int
	stdout, stderr string
}

func runAgent(t *testing.T, envv []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	cmd.Env = append(os.Environ(), envv...)
	return runCmd(t, cmd)
}

// runCmd runs a prepared command and collects its exit code and output.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// cliResponder is the OCSP URL of the CLI hosts' certificate: a local port where nothing
// listens, so the agent's own check of the responder finds it down, as during an outage.
const cliResponder = "http://127.0.0.1:9/"

// cliHost is a fake EA4 tree whose cPanel scripts are recording stand-ins: each appends its
// argv to standins.log; apachectl fails while ROOT/fail-configtest exists, restartsrv_httpd
// while ROOT/fail-restart exists.
func cliHost(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"/etc/cpanel/ea4/is_ea4": "",
		ea4HTTPD:                 wiredHTTPD,
		ea4Include:               adminBytes,
		fakehost.CertFile:        fakehost.Cert(t, "a.example", cliResponder, false),
	}
	for p, c := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(c), 0o644)
	}
	standin := func(p, failFlag, okText, failText string) {
		script := fmt.Sprintf(`#!/bin/sh
echo "$(basename "$0") $*" >>%q/standins.log
if [ -e %q/%s ]; then echo %q >&2; exit 1; fi
echo %q
`, root, root, failFlag, failText, okText)
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(script), 0o755)
	}
	standin("/usr/sbin/apachectl", "fail-configtest", "Syntax OK", "AH00526: Syntax error on line 2 of pre_virtualhost_global.conf")
	standin("/usr/local/cpanel/scripts/restartsrv_httpd", "fail-restart", "httpd restarted successfully.", "httpd has failed, please check the logs")
	return root
}

func standins(t *testing.T, root string) string {
	b, _ := os.ReadFile(filepath.Join(root, "standins.log"))
	return string(b)
}

func TestCLIVersion(t *testing.T) {
	r := runAgent(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "stapling-agent ") {
		t.Fatalf("%+v", r)
	}
}

func TestCLIUnknownLayoutExit2CreatesNothing(t *testing.T) {
	root := t.TempDir()
	for _, cmd := range []string{"remediate", "revert"} {
		r := runAgent(t, nil, "--root", root, cmd)
		if r.code != 2 || !strings.Contains(r.stderr, "looked for /etc/cpanel/ea4/is_ea4") {
			t.Fatalf("%s: %+v", cmd, r)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("created %v", entries)
	}
}

func TestCLIRemediateIdempotent(t *testing.T) {
	root := cliHost(t)
	r := runAgent(t, nil, "--root", root, "remediate")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if got := standins(t, root); got != "apachectl -t\nrestartsrv_httpd \n" {
		t.Fatalf("stand-ins ran:\n%s", got)
	}
	inc := filepath.Join(root, ea4Include)
	before, _ := os.Stat(inc)
	content, _ := os.ReadFile(inc)
	r = runAgent(t, nil, "--root", root, "remediate")
	if r.code != 0 || !strings.Contains(r.stdout, "nothing to do") {
		t.Fatalf("%+v", r)
	}
	after, _ := os.Stat(inc)
	again, _ := os.ReadFile(inc)
	if !after.ModTime().Equal(before.ModTime()) || !bytes.Equal(content, again) {
		t.Fatal("second run touched the include")
	}
	if got := standins(t, root); strings.Count(got, "restartsrv_httpd") != 1 {
		t.Fatalf("second run restarted:\n%s", got)
	}
}

func TestCLIConfigTestFailureExit1NothingWritten(t *testing.T) {
	root := cliHost(t)
	os.WriteFile(filepath.Join(root, "fail-configtest"), nil, 0o644)
	r := runAgent(t, nil, "--root", root, "remediate")
	if r.code != 1 || !strings.Contains(lastLine(r.stderr), "AH00526") || strings.Count(r.stderr, "stapling-agent: error") != 1 {
		t.Fatalf("%+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(root, ea4Include)); string(b) != adminBytes {
		t.Fatalf("include changed: %q", b)
	}
	if strings.Contains(standins(t, root), "restartsrv_httpd") {
		t.Fatal("restarted after a failed config test")
	}
}

func TestCLIRestartFailureExit1(t *testing.T) {
	root := cliHost(t)
	os.WriteFile(filepath.Join(root, "fail-restart"), nil, 0o644)
	r := runAgent(t, nil, "--root", root, "remediate")
	if r.code != 1 || !strings.Contains(r.stderr, "restored") {
		t.Fatalf("%+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(root, ea4Include)); string(b) != adminBytes {
		t.Fatalf("include changed: %q", b)
	}
}

func TestCLIDryRun(t *testing.T) {
	root := cliHost(t)
	r := runAgent(t, nil, "--root", root, "remediate", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "+    SSLUseStapling off") {
		t.Fatalf("%+v", r)
	}
	if standins(t, root) != "" {
		t.Fatal("dry run ran a command")
	}
	if _, err := os.Stat(filepath.Join(root, config.DefaultStateDir)); !os.IsNotExist(err) {
		t.Fatal("dry run created the state directory")
	}
}

func TestCLIConcurrentRunsOneBlockOneRestart(t *testing.T) {
	root := cliHost(t)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = runAgent(t, nil, "--root", root, "remediate").code
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Errorf("run %d exited %d", i, c)
		}
	}
	b, _ := os.ReadFile(filepath.Join(root, ea4Include))
	if n := strings.Count(string(b), "# BEGIN stapling-agent"); n != 1 {
		t.Fatalf("%d blocks", n)
	}
	if n := strings.Count(standins(t, root), "restartsrv_httpd"); n != 1 {
		t.Fatalf("%d restarts", n)
	}
}

func TestCLIConfigErrors(t *testing.T) {
	root := cliHost(t)
	cfgDir := filepath.Join(root, "etc/stapling-agent")
	os.MkdirAll(cfgDir, 0o755)
	cfg := filepath.Join(cfgDir, "config.yaml")
	write := func(content string, mode os.FileMode) {
		os.WriteFile(cfg, []byte(content), mode)
		os.Chmod(cfg, mode)
	}
	cases := []struct {
		name    string
		setup   func()
		args    []string
		env     []string
		wantErr string
	}{
		{"unknown key", func() { write("policy:\n  treshold: 3\n", 0o600) }, nil, nil, `unknown key "policy.treshold"`},
		{"bad yaml", func() { write("policy: [\n", 0o600) }, nil, nil, "config file"},
		{"bad value", func() { write("mode: yolo\n", 0o600) }, nil, nil, "mode must be enforce or dry-run"},
		{"env overrides", func() { write("", 0o600) }, nil, []string{"STAPLING_AGENT_POLICY_THRESHOLD=0"}, "policy.threshold must be at least 1"},
		{"missing explicit", func() {}, []string{"--config", filepath.Join(root, "nope.yaml")}, nil, "no such file"},
		{"world writable", func() { write("mode: enforce\n", 0o666) }, nil, nil, "writable by group or others"},
		{"bad log level", func() { write("", 0o600) }, []string{"--log-level", "loud"}, nil, "log level"},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct {
			name    string
			setup   func()
			args    []string
			env     []string
			wantErr string
		}{"not owned by root", func() { write("", 0o600); os.Chown(cfg, 65534, 65534) }, nil, nil, "not root"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(cfg)
			c.setup()
			args := append(append([]string{"--root", root}, c.args...), "remediate")
			r := runAgent(t, c.env, args...)
			if r.code != 2 || !strings.Contains(r.stderr, c.wantErr) {
				t.Fatalf("got %+v, want exit 2 with %q", r, c.wantErr)
			}
			if !strings.HasPrefix(r.stderr, "stapling-agent: error: ") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Fatalf("error is not one line:\n%s", r.stderr)
			}
			if standins(t, root) != "" {
				t.Fatal("a command ran despite the bad configuration")
			}
		})
	}
}

func TestCLIConfigNamesCommands(t *testing.T) {
	root := cliHost(t)
	os.MkdirAll(filepath.Join(root, "etc/stapling-agent"), 0o755)
	// The restart command from the environment, resolved under --root like the defaults.
	alt := filepath.Join(root, "usr/local/bin/my-restart")
	os.MkdirAll(filepath.Dir(alt), 0o755)
	os.WriteFile(alt, []byte(fmt.Sprintf("#!/bin/sh\necho \"my-restart $*\" >>%q/standins.log\n", root)), 0o755)
	r := runAgent(t, []string{"STAPLING_AGENT_COMMANDS_RESTART=/usr/local/bin/my-restart --graceful"}, "--root", root, "remediate")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if got := standins(t, root); !strings.Contains(got, "my-restart --graceful") {
		t.Fatalf("configured restart not used:\n%s", got)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// syncBuffer collects a running process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor polls cond until it holds or 10 s pass: the process under test works on its own
// clock, so this test waits for its events rather than sleeping a fixed time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCLIRunDaemon(t *testing.T) {
	root := cliHost(t)
	logDir := filepath.Join(root, "var/log/apache2")
	os.MkdirAll(logDir, 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	os.WriteFile(filepath.Join(logDir, "error_log"), nil, 0o644)
	cfgFile := filepath.Join(root, "etc/stapling-agent/config.yaml")
	os.MkdirAll(filepath.Dir(cfgFile), 0o755)
	os.WriteFile(cfgFile, []byte("mode: enforce\n"), 0o600)

	cmd := exec.Command(agentBin, "--root", root, "run")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(t, "the daemon to follow error_log", func() bool { return strings.Contains(stderr.String(), "following error_log") })

	w, _ := os.OpenFile(filepath.Join(logDir, "error_log"), os.O_WRONLY|os.O_APPEND, 0o644)
	defer w.Close()
	ts := time.Now().Format("Mon Jan 02 15:04:05.000000 2006")
	for i := 0; i < 3; i++ {
		fmt.Fprintf(w, "[%s] [ssl:error] [pid %d] (111)Connection refused: [client 1.2.3.4:443] AH01974: could not connect to OCSP responder '127.0.0.1:9'\n", ts, 50+i)
		fmt.Fprintf(w, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", ts, 50+i)
	}
	waitFor(t, "the decision", func() bool { return strings.Contains(stderr.String(), `"decision":"remediate"`) })
	if !strings.Contains(standins(t, root), "restartsrv_httpd") || !strings.Contains(stderr.String(), `"cause":"connect_refused"`) {
		t.Fatalf("no decision line:\n%s", stderr.String())
	}

	os.WriteFile(cfgFile, []byte("mode: sometimes\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload to be refused", func() bool { return strings.Contains(stderr.String(), "keeping the old configuration") })

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %s to stop", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not stop after SIGTERM")
	}
	if n := strings.Count(standins(t, root), "restartsrv_httpd"); n != 1 {
		t.Fatalf("%d restarts", n)
	}
}

// config check validates exactly what every command loads: exit 0 and a summary when valid, 2
// with the reason on one line when not; it changes nothing.
func TestCLIConfigCheck(t *testing.T) {
	root := cliHost(t)
	cfg := filepath.Join(root, "etc/stapling-agent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("mode: enforce\npolicy:\n  threshold: 5\n"), 0o600)
	before := fakehost.SnapshotTree(t, filepath.Join(root, "etc/apache2"))
	r := runAgent(t, nil, "--root", root, "config", "check")
	if r.code != 0 || !strings.Contains(r.stdout, "configuration valid: mode enforce, policy 5 failures in 10m0s") {
		t.Fatalf("valid: %+v", r)
	}
	for content, want := range map[string]string{
		"mode: sometimes\n":           "mode must be enforce or dry-run",
		"policy:\n  treshold: 5\n":    `unknown key "policy.treshold"`,
		"policy:\n  window: banana\n": "window",
	} {
		os.WriteFile(cfg, []byte(content), 0o600)
		r := runAgent(t, nil, "--root", root, "config", "check")
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
			t.Fatalf("%q: %+v", content, r)
		}
	}
	if r := runAgent(t, []string{"STAPLING_AGENT_POLICY_THRESHOLD=0"}, "--root", root, "--config", "/nonexistent.yaml", "config", "check"); r.code != 2 {
		t.Fatalf("missing explicit config: %+v", r)
	}
	if fakehost.SnapshotTree(t, filepath.Join(root, "etc/apache2")) != before || standins(t, root) != "" {
		t.Fatal("config check changed Apache's tree or ran a command")
	}
	if _, err := os.Stat(filepath.Join(root, config.DefaultStateDir)); !os.IsNotExist(err) {
		t.Fatal("config check created the state directory")
	}
}

// Every usage error of a command line that asks for Nagios output is the plugin's UNKNOWN (3)
// with one "STAPLING UNKNOWN - reason" line on stdout, wherever cobra stops: a root flag before
// the subcommand (it swallows the subcommand as its value, so the audit never parses), an
// unknown or misspelt command, another command's flags. Without Nagios a usage error is bad
// usage (2) with nothing on stdout, an unknown command included.
func TestCLINagiosUsageErrorsBeforeTheAudit(t *testing.T) {
	root := cliHost(t)
	for _, tc := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"root flag before the subcommand", []string{"--bogus", "audit", "--format", "nagios"}, "unknown flag: --bogus"},
		{"root flag with a value before", []string{"--bogus=1", "audit", "--format=nagios"}, "unknown flag: --bogus"},
		{"bad root flag value before", []string{"--command-timeout", "soon", "audit", "--format", "nagios"}, `invalid argument "soon" for "--command-timeout"`},
		{"root flag missing its value", []string{"audit", "--format", "nagios", "--root"}, "flag needs an argument: --root"},
		{"flag after the format", []string{"audit", "--format", "nagios", "--bogus"}, "unknown flag: --bogus"},
		{"misspelt command", []string{"audti", "--format", "nagios"}, `unknown command "audti"`},
		{"no command", []string{"--format", "nagios"}, "unknown flag: --format"},
		{"another command's flags", []string{"probe", "--format", "nagios", "--bogus"}, "unknown flag: --bogus"},
		{"another command's arguments", []string{"version", "extra", "--format=nagios"}, "unknown flag: --format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An explicit config that does not exist: a case that ran a command would fail.
			r := runAgent(t, nil, append([]string{"--config", "/nonexistent.yaml"}, tc.args...)...)
			if r.code != 3 || strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(r.stdout, "STAPLING UNKNOWN - ") || !strings.Contains(r.stdout, tc.reason) {
				t.Fatalf("want exit 3 and one line \"STAPLING UNKNOWN - ...%s...\", got %+v", tc.reason, r)
			}
		})
	}
	// Other formats: the audit's and the probe's usage errors are their unknown (3: the audit's
	// 2 means critical), the other commands' are bad usage (2); nothing on stdout.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--bogus", "audit"}, 3},
		{[]string{"--bogus", "audit", "--format", "json"}, 3},
		{[]string{"--log-level", "debug", "--bogus", "audit", "--since", "1h"}, 3},
		{[]string{"audit", "--format", "json", "--bogus"}, 3},
		{[]string{"probe", "--bogus"}, 3},
		{[]string{"--bogus", "probe", "--format", "json"}, 3},
		{[]string{"audti"}, 2},
		{[]string{"version", "extra"}, 2},
		{[]string{"remediate", "--bogus"}, 2},
	} {
		r := runAgent(t, nil, append([]string{"--root", root}, tc.args...)...)
		if r.code != tc.code || r.stdout != "" || !strings.HasPrefix(r.stderr, "stapling-agent: error: ") {
			t.Errorf("%v: want exit %d, nothing on stdout and the error on stderr, got %+v", tc.args, tc.code, r)
		}
	}
}

// The hidden `man DIR` writes a page per command, each stamped with the binary's own version
// on its .TH line (scripts/package.sh builds it with the package's), and the main page carries
// the sections the commands' help cannot: FILES, CONFIGURATION, ENVIRONMENT, EXIT STATUS and
// SIGNALS, before SEE ALSO. packaging's TestManPages renders the packaged ones.
func TestCLIManPages(t *testing.T) {
	dir := t.TempDir()
	if r := runAgent(t, nil, "man", dir); r.code != 0 || r.stdout != "" {
		t.Fatalf("man: %+v", r)
	}
	version := strings.TrimSpace(runAgent(t, nil, "version").stdout)
	for _, name := range []string{"stapling-agent", "stapling-agent-audit", "stapling-agent-run", "stapling-agent-config-check"} {
		b, err := os.ReadFile(filepath.Join(dir, name+".8"))
		if err != nil {
			t.Fatal(err)
		}
		title := strings.ToUpper(name)
		if want := fmt.Sprintf(".TH %q \"8\" ", title); !strings.Contains(string(b), want) || !strings.Contains(string(b), fmt.Sprintf("%q", version)) {
			t.Errorf("%s.8: want %s... %q in\n%s", name, want, version, strings.SplitN(string(b), "\n", 3)[1])
		}
	}
	main, _ := os.ReadFile(filepath.Join(dir, "stapling-agent.8"))
	last := 0
	for _, sh := range []string{`"FILES"`, `"CONFIGURATION"`, `"ENVIRONMENT"`, `"EXIT STATUS"`, `"SIGNALS"`, "SEE ALSO"} {
		i := strings.Index(string(main), "\n.SH "+sh+"\n")
		if i < last {
			t.Errorf("stapling-agent.8: .SH %s missing or out of order", sh)
		}
		last = i
	}
	if _, err := os.Stat(filepath.Join(dir, "stapling-agent-man.8")); err == nil {
		t.Error("the hidden man command has a page")
	}
}
