package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

const (
	ea4Include = "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"
	ea4HTTPD   = "/etc/apache2/conf/httpd.conf"
	adminBytes = "# admin's include\r\nKeepAliveTimeout 5" // CRLF, no final newline
	wiredHTTPD = "SSLUseStapling On\nSSLStaplingCache shmcb:/run/apache2/stapling(256000)\n" +
		"Include \"/etc/apache2/conf.d/includes/pre_virtualhost_global.conf\"\n" +
		"<VirtualHost *:443>\nServerName a.example\nSSLEngine on\n</VirtualHost>\n"
)

// fakeRunner records commands and answers from a script of errors per command name.
type fakeRunner struct {
	calls [][]string
	errs  map[string][]error
	hook  map[string]func()
}

func (f *fakeRunner) Run(_ context.Context, argv []string) ([]byte, error) {
	f.calls = append(f.calls, argv)
	name := argv[0]
	if h := f.hook[name]; h != nil {
		h()
	}
	if q := f.errs[name]; len(q) > 0 {
		f.errs[name] = q[1:]
		if q[0] != nil {
			return []byte("AH00526: Syntax error"), &apacheconf.CmdError{Argv: argv, Output: []byte("AH00526: Syntax error"), Err: q[0]}
		}
	}
	return nil, nil
}

func (f *fakeRunner) names() string {
	var n []string
	for _, c := range f.calls {
		n = append(n, c[0])
	}
	return strings.Join(n, ",")
}

type fixture struct {
	root   string
	layout *apacheconf.Layout
	runner *fakeRunner
	out    *bytes.Buffer
	r      *Remediator
}

// newFixture builds a fake EA4 host (or EA3 with kind "ea3") in a temp dir.
func newFixture(t *testing.T, kind string, files map[string]string) *fixture {
	t.Helper()
	root := t.TempDir()
	if kind == "ea4" {
		files["/etc/cpanel/ea4/is_ea4"] = ""
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := apacheconf.Detect(root)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{root: root, layout: l, runner: &fakeRunner{errs: map[string][]error{}, hook: map[string]func(){}}, out: &bytes.Buffer{}}
	f.r = &Remediator{
		Layout:   l,
		Cmds:     apacheconf.Commands{ConfigTest: []string{"configtest"}, Restart: []string{"restart"}, Rebuild: []string{"rebuild"}},
		Runner:   f.runner,
		State:    &State{Dir: filepath.Join(root, DefaultStateDir), now: time.Now},
		Log:      zerolog.Nop(),
		Out:      f.out,
		LockWait: time.Second,
		Now:      time.Now,
	}
	if kind == "ea3" {
		f.r.Cmds.Rebuild = nil
	}
	return f
}

func (f *fixture) read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestRemediateWritesTestsRestarts(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.runner.names(); got != "configtest,restart" {
		t.Fatalf("ran %s, want configtest,restart", got)
	}
	got := f.read(t, ea4Include)
	if !strings.HasPrefix(got, adminBytes+"\r\n") || !apacheconf.InspectInclude([]byte(got)).ManagedBlock {
		t.Fatalf("include = %q", got)
	}
	if !rep.Changed || rep.After != "off" {
		t.Fatalf("report = %+v", rep)
	}
	backup, _ := os.ReadFile(rep.Backup)
	if string(backup) != adminBytes {
		t.Fatalf("backup holds %q", backup)
	}
	entries, _ := f.r.State.Journal()
	var steps []string
	for _, e := range entries {
		steps = append(steps, e.Step)
	}
	if strings.Join(steps, ",") != "intent,written,done" {
		t.Fatalf("journal steps %v", steps)
	}
	if info, _ := os.Stat(f.r.State.Dir); info.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %o", info.Mode().Perm())
	}

	// A second run changes nothing: same bytes, same mtime, no command.
	before, _ := os.Stat(filepath.Join(f.root, ea4Include))
	f.runner.calls = nil
	rep, err = f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Noop || len(f.runner.calls) != 0 {
		t.Fatalf("second run: %+v, %v, ran %s", rep, err, f.runner.names())
	}
	after, _ := os.Stat(filepath.Join(f.root, ea4Include))
	if !after.ModTime().Equal(before.ModTime()) || f.read(t, ea4Include) != got {
		t.Fatal("second run touched the include")
	}
}

func TestRemediateAdminAlreadyOff(t *testing.T) {
	content := "SSLUseStapling off\nSSLUseStapling off\n" // the `echo >>` one-liner, run twice
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: content})
	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Noop || len(f.runner.calls) != 0 || f.read(t, ea4Include) != content {
		t.Fatalf("%+v %v %s", rep, err, f.runner.names())
	}
	if !strings.Contains(f.out.String(), "admin's own") {
		t.Fatalf("output does not say who turned it off: %s", f.out)
	}
}

func TestRemediateConfigTestFailsRestoresBytes(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.errs["configtest"] = []error{errors.New("exit status 1")}
	_, err := f.r.Remediate(context.Background(), false)
	if exitCode(err) != ExitFailed || !strings.Contains(err.Error(), "AH00526") {
		t.Fatalf("err = %v (code %d), want exit 1 with the config test's output", err, exitCode(err))
	}
	if got := f.runner.names(); got != "configtest" {
		t.Fatalf("ran %s; a failed config test must not restart", got)
	}
	if f.read(t, ea4Include) != adminBytes {
		t.Fatal("include not restored byte for byte")
	}
	entries, _ := f.r.State.Journal()
	if last := entries[len(entries)-1]; last.Step != "rolled_back" || last.Result != "error" {
		t.Fatalf("last journal entry %+v", last)
	}
}

func TestRemediateRestartFailsRollsBack(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.errs["restart"] = []error{errors.New("exit status 1")}
	var atSecondRestart string
	f.runner.hook["restart"] = func() { atSecondRestart = f.read(t, ea4Include) }
	_, err := f.r.Remediate(context.Background(), false)
	if exitCode(err) != ExitFailed {
		t.Fatalf("err = %v", err)
	}
	if got := f.runner.names(); got != "configtest,restart,restart" {
		t.Fatalf("ran %s", got)
	}
	if atSecondRestart != adminBytes || f.read(t, ea4Include) != adminBytes {
		t.Fatal("second restart did not run on the restored bytes")
	}
}

func TestRemediateRestartFailsTwiceSaysApacheMayBeDown(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.errs["restart"] = []error{errors.New("exit status 1"), errors.New("exit status 1")}
	_, err := f.r.Remediate(context.Background(), false)
	if exitCode(err) != ExitFailed || !strings.Contains(err.Error(), "may be down") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != adminBytes {
		t.Fatal("include not restored")
	}
}

func TestRemediateNotWiredRebuilds(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: "SSLUseStapling On\n"})
	f.runner.hook["rebuild"] = func() {
		// rebuildhttpdconf adds the Include line now that the file exists.
		if _, err := os.Stat(filepath.Join(f.root, ea4Include)); err == nil {
			os.WriteFile(filepath.Join(f.root, ea4HTTPD), []byte(wiredHTTPD), 0o644)
		}
	}
	os.MkdirAll(filepath.Join(f.root, filepath.Dir(ea4Include)), 0o755)
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if got := f.runner.names(); got != "rebuild,configtest,restart" {
		t.Fatalf("ran %s", got)
	}
	info, err := os.Stat(filepath.Join(f.root, ea4Include))
	if err != nil || info.Mode().Perm() != 0o644 {
		t.Fatalf("include not created 0644: %v", err)
	}
}

func TestRemediateStillNotWiredAfterRebuildRestores(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: "SSLUseStapling On\n"})
	os.MkdirAll(filepath.Join(f.root, filepath.Dir(ea4Include)), 0o755)
	_, err := f.r.Remediate(context.Background(), false)
	if exitCode(err) != ExitRefused || !strings.Contains(err.Error(), "still does not include") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, ea4Include)); !os.IsNotExist(err) {
		t.Fatal("include created by us was not removed")
	}
	if got := f.runner.names(); got != "rebuild" {
		t.Fatalf("ran %s", got)
	}
}

func TestRemediateEA3NotWiredRefusesWritesNothing(t *testing.T) {
	inc := "/usr/local/apache/conf/includes/pre_virtualhost_global.conf"
	f := newFixture(t, "ea3", map[string]string{"/usr/local/apache/conf/httpd.conf": "SSLUseStapling On\n", inc: "x\n"})
	_, err := f.r.Remediate(context.Background(), false)
	if exitCode(err) != ExitRefused || !strings.Contains(err.Error(), "EA3") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, inc) != "x\n" || len(f.runner.calls) != 0 {
		t.Fatal("refusal changed something")
	}
}

func TestRemediateEA3Wired(t *testing.T) {
	inc := "/usr/local/apache/conf/includes/pre_virtualhost_global.conf"
	f := newFixture(t, "ea3", map[string]string{
		"/usr/local/apache/conf/httpd.conf": "ServerRoot /usr/local/apache\nSSLUseStapling On\nInclude conf/includes/pre_virtualhost_global.conf\n",
		inc:                                 "",
	})
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if !apacheconf.InspectInclude([]byte(f.read(t, inc))).StaplingOff {
		t.Fatal("stapling not off")
	}
}

func TestRemediateFinishesInterruptedRun(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	// Simulate a run killed after the rename but before the restart.
	next, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	os.WriteFile(filepath.Join(f.root, ea4Include), next, 0o644)
	f.r.State.Ensure()
	f.r.State.Append(JournalEntry{Action: "remediate", Step: "written", File: ea4Include, Result: "ok"})
	stale := filepath.Join(f.root, filepath.Dir(ea4Include), ".stapling-agent-pre_virtualhost_global.conf.99.tmp")
	os.WriteFile(stale, []byte("half"), 0o644)

	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Finished || rep.Changed {
		t.Fatalf("%+v %v", rep, err)
	}
	if got := f.runner.names(); got != "configtest,restart" {
		t.Fatalf("ran %s", got)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("stale temp file left")
	}
	if u, _ := f.r.State.Unfinished(ea4Include); u != nil {
		t.Fatalf("still unfinished: %+v", u)
	}
}

func TestDryRunTouchesNothing(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	if _, err := f.r.Remediate(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if len(f.runner.calls) != 0 || f.read(t, ea4Include) != adminBytes {
		t.Fatal("dry run ran a command or wrote the include")
	}
	if _, err := os.Stat(f.r.State.Dir); !os.IsNotExist(err) {
		t.Fatal("dry run created the state directory")
	}
	out := f.out.String()
	for _, want := range []string{"+# BEGIN stapling-agent", "+    SSLUseStapling off", "\\ No newline at end of file", "would run: configtest", "would run: restart"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
}

func TestRevert(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f.runner.calls = nil
	rep, err := f.r.Revert(context.Background(), false)
	if err != nil || !rep.Changed || rep.After != "on" {
		t.Fatalf("%+v %v", rep, err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.names() != "configtest,restart" {
		t.Fatalf("revert: include %q, ran %s", f.read(t, ea4Include), f.runner.names())
	}
	f.runner.calls = nil
	rep, err = f.r.Revert(context.Background(), false)
	if err != nil || !rep.Noop || len(f.runner.calls) != 0 {
		t.Fatalf("nothing to revert: %+v %v", rep, err)
	}
}

func TestRevertRefusesWithoutStaplingCache(t *testing.T) {
	httpd := strings.Replace(wiredHTTPD, "SSLStaplingCache shmcb:/run/apache2/stapling(256000)\n", "", 1)
	block, _ := apacheconf.ApplyBlock(nil)
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: string(block)})
	_, err := f.r.Revert(context.Background(), false)
	if exitCode(err) != ExitRefused || !strings.Contains(err.Error(), "AH01958") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != string(block) {
		t.Fatal("refused revert changed the include")
	}
}

func TestRemediateRefusesBadIncludes(t *testing.T) {
	cases := map[string]func(root string){
		"directory": func(root string) { os.Mkdir(filepath.Join(root, ea4Include), 0o755) },
		"dangling symlink": func(root string) {
			os.Symlink("/nonexistent/file", filepath.Join(root, ea4Include))
		},
		"binary": func(root string) { os.WriteFile(filepath.Join(root, ea4Include), []byte("a\x00b"), 0o644) },
		"unclosed container": func(root string) {
			os.WriteFile(filepath.Join(root, ea4Include), []byte("<VirtualHost *:443>\n"), 0o644)
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD})
			os.MkdirAll(filepath.Join(f.root, filepath.Dir(ea4Include)), 0o755)
			setup(f.root)
			before := snapshotTree(t, filepath.Join(f.root, "etc"))
			_, err := f.r.Remediate(context.Background(), false)
			if exitCode(err) != ExitRefused {
				t.Fatalf("err = %v (code %d), want refused", err, exitCode(err))
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if after := snapshotTree(t, filepath.Join(f.root, "etc")); after != before || len(f.runner.calls) != 0 {
				t.Fatal("refusal changed the tree or ran a command")
			}
		})
	}
}

// snapshotTree renders every path, mode and content under dir, to compare before and after.
func snapshotTree(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		sb.WriteString(p + " " + info.Mode().String() + " " + info.ModTime().String())
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			sb.Write(b)
		}
		sb.WriteByte('\n')
		return nil
	})
	return sb.String()
}

// fakeVerifier answers handshakes from a script: ok until broken is set.
type fakeVerifier struct{ broken *bool }

func (v fakeVerifier) Handshake(_ context.Context, t probeTarget) (time.Duration, bool, error) {
	if *v.broken {
		return time.Millisecond, false, errors.New("connection reset by peer")
	}
	return time.Millisecond, true, nil
}

// A vhost that served before the change and fails after the restart triggers the rollback.
func TestRemediateVerificationFailureRollsBack(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	broken := false
	f.r.Verify = fakeVerifier{&broken}
	f.runner.hook["restart"] = func() { broken = !broken } // the new config breaks it; the old one mends it
	_, err := f.r.Remediate(context.Background(), false)
	if exitCode(err) != ExitFailed || !strings.Contains(err.Error(), "verification failed") || !strings.Contains(err.Error(), "a.example") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.names() != "configtest,restart,restart" {
		t.Fatalf("include %q, ran %s", f.read(t, ea4Include), f.runner.names())
	}
}
