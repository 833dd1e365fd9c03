// Package packaging holds the RPM, systemd and Ansible files; this test verifies them
// offline: the RPM built by scripts/package.sh, the units with systemd-analyze, and the
// playbooks against localhost with the packaged binary and sample hosts.
package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stapling-agent/stapling-agent/agent/testguard"
)

// need skips when a tool is missing, except in CI, where .ci/run installs them all.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing in CI", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// built is the RPMs made once for every test: 0.1.0-1 and, for the upgrade, 0.1.1-1.
var built struct {
	dist     string
	v1, v2   string
	extract  string // v1 unpacked
	bin      string
	err      error
	attempts int
}

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	g, err := testguard.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "stapling-agent-rpm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Chmod(dir, 0o755)
	built.dist = dir
	code := m.Run()
	if err := g.Finish(); err != nil {
		fmt.Fprintf(os.Stderr, "testguard: the tests left things behind:\n%s\n", err)
		return 1
	}
	return code
}

func packages(t *testing.T) {
	t.Helper()
	need(t, "rpm", "rpm2cpio", "cpio")
	if built.attempts > 0 {
		if built.err != nil {
			t.Fatal(built.err)
		}
		return
	}
	built.attempts++
	dist := built.dist
	for _, v := range []string{"0.1.0", "0.1.1"} {
		cmd := exec.Command("../scripts/package.sh")
		cmd.Env = append(os.Environ(), "VERSION="+v, "RELEASE=1", "DIST="+dist)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("package.sh %s: %v\n%s", v, err, out)
			t.Fatal(built.err)
		}
	}
	built.v1 = filepath.Join(dist, "stapling-agent-0.1.0-1.x86_64.rpm")
	built.v2 = filepath.Join(dist, "stapling-agent-0.1.1-1.x86_64.rpm")
	built.extract = filepath.Join(dist, "extract")
	os.Mkdir(built.extract, 0o755)
	// --no-absolute-filenames: never unpack the package's paths onto this machine.
	run(t, built.extract, nil, "sh", "-c", "rpm2cpio "+built.v1+" | cpio -idm --no-absolute-filenames --quiet")
	built.bin = filepath.Join(built.extract, "usr/sbin/stapling-agent")
}

// The NRPE sudoers drop-in parses (visudo), pins the audit's arguments exactly (a rule that
// ends in the command name alone would allow any arguments, --root of a user's own tree
// included), and pins what the README's NRPE example runs.
func TestSudoersDropIn(t *testing.T) {
	need(t, "visudo")
	run(t, "", nil, "visudo", "-cf", "sudoers/stapling-agent")
	b, _ := os.ReadFile("sudoers/stapling-agent")
	readme, _ := os.ReadFile("../README.md")
	const pinned = "/usr/sbin/stapling-agent audit --format nagios --since 1h --timeout 8s"
	rules := 0
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rules++
		if !strings.HasSuffix(line, "NOPASSWD: "+pinned) {
			t.Errorf("rule does not pin the arguments: %q", line)
		}
	}
	if rules != 2 || !strings.Contains(string(readme), "sudo "+pinned) {
		t.Fatalf("%d rules; README's NRPE example must run exactly %q", rules, pinned)
	}
}

func TestRPMContentsAndFlags(t *testing.T) {
	packages(t)
	files := run(t, "", nil, "rpm", "-qpl", built.v1)
	for _, want := range []string{
		"/usr/sbin/stapling-agent", "/usr/lib/systemd/system/stapling-agent.service",
		"/usr/lib/systemd/system/stapling-agent-audit.service", "/usr/lib/systemd/system/stapling-agent-audit.timer",
		"/usr/lib/systemd/system/stapling-agent-restart.service", "/usr/lib/systemd/system/stapling-agent-rebuild.service",
		"/etc/stapling-agent/config.yaml", "/var/lib/stapling-agent", "/etc/ansible/facts.d/stapling_agent.fact",
		"/usr/share/man/man8/stapling-agent.8.gz", "/usr/share/man/man8/stapling-agent-audit.8.gz",
		"/usr/share/licenses/stapling-agent/LICENSE", "/etc/sudoers.d/stapling-agent",
		"/etc/sysconfig/stapling-agent", "/usr/share/bash-completion/completions/stapling-agent",
	} {
		if !strings.Contains(files, want+"\n") {
			t.Errorf("RPM lacks %s", want)
		}
	}
	flags := run(t, "", nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]`, built.v1)
	for _, want := range []string{
		"/etc/stapling-agent/config.yaml cn -rw-------",
		"/var/lib/stapling-agent  drwx------",
		"/usr/sbin/stapling-agent  -rwxr-xr-x",
		"/etc/ansible/facts.d/stapling_agent.fact  -rwxr-xr-x",
		"/etc/sudoers.d/stapling-agent cn -r--r-----",
	} {
		if !strings.Contains(flags, want+"\n") {
			t.Errorf("flags: want %q in\n%s", want, flags)
		}
	}
	scripts := run(t, "", nil, "rpm", "-qp", "--scripts", built.v1)
	for _, want := range []string{"systemctl preset stapling-agent.service", "systemctl --no-reload disable", "systemctl try-restart stapling-agent.service", `[ "$1" -eq 1 ]`, `[ "$1" -eq 0 ]`, `[ "$1" -ge 1 ]`} {
		if !strings.Contains(scripts, want) {
			t.Errorf("scriptlets lack %q", want)
		}
	}
	if strings.Contains(scripts, "systemctl start") || strings.Contains(scripts, "enable --now") {
		t.Error("a scriptlet starts the daemon: installing must never start remediation")
	}
	cfg, _ := os.ReadFile(filepath.Join(built.extract, "etc/stapling-agent/config.yaml"))
	if !regexp.MustCompile(`(?m)^mode: dry-run$`).Match(cfg) {
		t.Error("the packaged config does not ship dry-run")
	}
}

func TestRPMBinaryRuns(t *testing.T) {
	packages(t)
	out := run(t, "", nil, built.bin, "version")
	if !strings.Contains(out, "stapling-agent 0.1.0-1") {
		t.Fatalf("version: %q", out)
	}
	host := filepath.Join(t.TempDir(), "host")
	run(t, "", nil, "../scripts/sample-host.sh", host)
	cmd := exec.Command(built.bin, "--root", host, "audit", "--format", "json")
	b, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(b), `"status": "critical"`) {
		t.Fatalf("packaged audit of the sample host: %v\n%s", err, b)
	}
	if out := run(t, "", nil, "file", built.bin); !strings.Contains(out, "statically linked") {
		t.Fatalf("not static: %s", out)
	}
	fact := run(t, "", nil, filepath.Join(built.extract, "etc/ansible/facts.d/stapling_agent.fact"))
	if !strings.HasPrefix(fact, "{") || !strings.Contains(fact, `"status"`) {
		t.Fatalf("fact: %q", fact)
	}
}

// rpmlint as a non-root user (as root it would unpack the package onto this machine, nfpm
// issue #1122), with the filters packaging/rpmlintrc justifies: no errors.
func TestRPMLint(t *testing.T) {
	packages(t)
	need(t, "rpmlint")
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	for _, f := range []string{built.v1, "rpmlintrc"} {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
	}
	cmd := exec.Command("rpmlint", "-r", filepath.Join(dir, "rpmlintrc"), filepath.Join(dir, filepath.Base(built.v1)))
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		os.Chmod(dir, 0o777)
	}
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), " 0 errors") {
		t.Fatalf("rpmlint:\n%s", out)
	}
}

// Install and upgrade into a scratch root: an edited config survives (%config(noreplace)).
func TestRPMInstallUpgradeKeepsEditedConfig(t *testing.T) {
	packages(t)
	if os.Geteuid() != 0 {
		t.Skip("rpm --root needs root")
	}
	root := t.TempDir()
	run(t, "", nil, "rpm", "--root", root, "--initdb")
	run(t, "", nil, "rpm", "--root", root, "--nodeps", "--noscripts", "-i", built.v1)
	cfg := filepath.Join(root, "etc/stapling-agent/config.yaml")
	edited := "mode: enforce\npolicy:\n  threshold: 5\n"
	if err := os.WriteFile(cfg, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "", nil, "rpm", "--root", root, "--nodeps", "--noscripts", "-U", built.v2)
	if b, _ := os.ReadFile(cfg); string(b) != edited {
		t.Fatalf("upgrade replaced the edited config: %q", b)
	}
	if q := run(t, "", nil, "rpm", "--root", root, "-q", "stapling-agent"); !strings.Contains(q, "0.1.1-1") {
		t.Fatalf("installed: %s", q)
	}
	info, _ := os.Stat(filepath.Join(root, "var/lib/stapling-agent"))
	if info == nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v", info)
	}
}

// systemd-analyze verify passes, and the daemon's and the audit's services rate 3.0 or better
// offline (issue 14, item 8: the audit's unit was 9.0 before it got the daemon's sandbox). The
// oneshots that restart Apache and rebuild httpd.conf through PID 1 are not sandboxed: Apache
// must inherit nothing (FACTS.md section 8).
func TestSystemdUnits(t *testing.T) {
	need(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "stapling-agent")
	run(t, "..", nil, "go", "build", "-o", bin, "./agent/cmd/stapling-agent")
	var units []string
	for _, u := range shippedUnits {
		b, _ := os.ReadFile(filepath.Join("systemd", u))
		// verify checks that ExecStart exists: point it at the binary just built.
		p := filepath.Join(dir, u)
		// And cPanel's scripts (the oneshot units run them) at something that exists here.
		text := strings.NewReplacer("/usr/sbin/stapling-agent", bin, "/usr/local/cpanel/scripts/restartsrv_httpd", "/bin/true",
			"/usr/local/cpanel/scripts/rebuildhttpdconf", "/bin/true").Replace(string(b))
		os.WriteFile(p, []byte(text), 0o644)
		units = append(units, p)
	}
	run(t, "", nil, "systemd-analyze", append([]string{"verify", "--man=no"}, units...)...)
	for _, u := range units {
		name := filepath.Base(u)
		if name != "stapling-agent.service" && name != "stapling-agent-audit.service" {
			continue // the timer; the oneshots through PID 1 are unsandboxed on purpose
		}
		level := exposure(t, name, run(t, "", nil, "systemd-analyze", "security", "--offline=yes", u))
		if level > 3.0 {
			t.Errorf("%s: exposure level %.1f, want 3.0 or better", name, level)
		}
		t.Logf("systemd-analyze security %s: exposure level %.1f", name, level)
	}

	// systemctl reload runs `config check` first: a bad file fails the reload (exit 2, the
	// reason on stderr) and the daemon is never signalled, so it keeps its configuration.
	unit, _ := os.ReadFile("systemd/stapling-agent.service")
	reloads := regexp.MustCompile(`(?m)^ExecReload=(.*)$`).FindAllStringSubmatch(string(unit), -1)
	if len(reloads) != 2 || reloads[0][1] != "/usr/sbin/stapling-agent config check $STAPLING_AGENT_ARGS" || !strings.HasPrefix(reloads[1][1], "/bin/kill -HUP $MAINPID") {
		t.Fatalf("ExecReload lines: %q", reloads)
	}
	for cfg, want := range map[string]int{"mode: sometimes\n": 2, "mode: enforce\npolicy:\n  threshold: 5\n": 0} {
		p := filepath.Join(dir, "config.yaml")
		os.WriteFile(p, []byte(cfg), 0o600)
		cmd := exec.Command(bin, "--root", dir, "--config", p, "config", "check")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != want || (want == 2 && !strings.Contains(string(out), "mode must be enforce or dry-run")) {
			t.Fatalf("config check of %q: exit %d, want %d\n%s", cfg, code, want, out)
		}
	}
}

// The fleet playbooks against localhost, with the packaged binary and sample hosts: one with an
// outage, one remediated, one that is not a cPanel host.
func TestAnsiblePlaybooks(t *testing.T) {
	packages(t)
	need(t, "ansible-playbook")
	dir := t.TempDir()
	h1, h2, h3 := filepath.Join(dir, "h1"), filepath.Join(dir, "h2"), filepath.Join(dir, "h3")
	run(t, "", nil, "../scripts/sample-host.sh", h1)
	run(t, "", nil, "../scripts/sample-host.sh", h2)
	run(t, "", nil, built.bin, "--root", h2, "remediate")
	os.Mkdir(h3, 0o755)
	// host4 stands in for a host whose audit names a responder a tenant chose: a spreadsheet
	// formula with a comma and quotes, which must stay one quoted, defused CSV cell. A stand-in
	// binary prints that audit, since the real one counts only failures naming a responder
	// that a served certificate uses, and a certificate's OCSP URL cannot hold this name.
	fake := filepath.Join(dir, "fake-audit")
	os.WriteFile(fake, []byte(`#!/bin/sh
cat <<'EOF'
{"schema": "stapling-agent/audit/v1", "status": "critical", "summary": "forged",
 "failures": {"total": 4, "by_cause": {"connect_timeout": 4}, "by_responder": {"=HYPERLINK(\"http://x\"),evil": 4}},
 "stapling": {"effective": "on"}}
EOF
exit 2
`), 0o755)
	inv := filepath.Join(dir, "inventory")
	os.WriteFile(inv, []byte(fmt.Sprintf("host1 ansible_connection=local stapling_agent_root=%[1]s stapling_agent_bin=%[4]s\nhost2 ansible_connection=local stapling_agent_root=%[2]s stapling_agent_bin=%[4]s\nhost3 ansible_connection=local stapling_agent_root=%[3]s stapling_agent_bin=%[4]s\nhost4 ansible_connection=local stapling_agent_bin=%[5]s\n", h1, h2, h3, built.bin, fake)), 0o644)
	// PYTHONDONTWRITEBYTECODE: loading filter_plugins/ must not leave __pycache__ in the tree.
	env := []string{"ANSIBLE_NOCOLOR=1", "PYTHONDONTWRITEBYTECODE=1", "ANSIBLE_LOCAL_TEMP=" + dir + "/tmp", "ANSIBLE_REMOTE_TEMP=" + dir + "/tmp", "ANSIBLE_HOME=" + dir + "/home"}
	report := filepath.Join(dir, "report")
	cmd := exec.Command("ansible-playbook", "-i", inv, "ansible/audit.yml",
		"-e", "stapling_agent_install=false",
		"-e", "stapling_agent_report_dir="+report, "-e", "ansible_python_interpreter=/usr/bin/python3")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	// host3 is not a cPanel host: exit 3 from the audit fails it, after the report is written.
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "host3") {
		t.Fatalf("audit.yml: %v\n%s", err, out)
	}
	csv, _ := os.ReadFile(filepath.Join(report, "fleet-report.csv"))
	want := "host,status,failures,top_cause,top_responder,effective_stapling\n" +
		"host1,critical,4,connect_timeout,127.0.0.1:9,on\n" +
		"host2,ok,4,connect_timeout,127.0.0.1:9,off\n" +
		"host3,unknown,0,,,unknown\n"
	// host4's responder is one cell, quoted (comma, quotes doubled), starting with a single
	// quote, so a spreadsheet shows it as text instead of evaluating it (OWASP's advice on
	// CSV injection).
	want += `host4,critical,4,connect_timeout,"'=HYPERLINK(""http://x""),evil",on` + "\n"
	if string(csv) != want {
		t.Fatalf("CSV:\n%s\nwant:\n%s", csv, want)
	}
	js, _ := os.ReadFile(filepath.Join(report, "fleet-report.json"))
	if strings.Count(string(js), `"schema": "stapling-agent/audit/v1"`) != 4 {
		t.Fatalf("JSON report:\n%s", js)
	}

	cfg := filepath.Join(dir, "config.yaml")
	b, _ := os.ReadFile("config.yaml")
	os.WriteFile(cfg, b, 0o600)
	cmd = exec.Command("ansible-playbook", "-i", inv, "ansible/enable.yml", "-e", "stapling_agent_enforce_hosts=host1",
		"-e", "stapling_agent_config="+cfg, "-e", "stapling_agent_manage_service=false", "-e", `{"stapling_agent_reload_argv": []}`,
		"-e", "ansible_python_interpreter=/usr/bin/python3")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("enable.yml: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(cfg)
	if !regexp.MustCompile(`(?m)^mode: enforce$`).Match(got) || regexp.MustCompile(`(?m)^mode: dry-run$`).Match(got) {
		t.Fatalf("config after enable.yml:\n%s", got)
	}
}

// shippedUnits are the unit files in systemd/, all installed by the package.
var shippedUnits = []string{"stapling-agent.service", "stapling-agent-audit.service", "stapling-agent-audit.timer",
	"stapling-agent-restart.service", "stapling-agent-rebuild.service"}

// exposure reads "Overall exposure level for UNIT: N.N" from systemd-analyze security.
func exposure(t *testing.T, unit, out string) float64 {
	t.Helper()
	m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unit) + `: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level for %s:\n%s", unit, out)
	}
	level, _ := strconv.ParseFloat(m[1], 64)
	return level
}
