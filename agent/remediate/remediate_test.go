package remediate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

const (
	ea4Include = fakehost.EA4Include
	ea4HTTPD   = fakehost.EA4HTTPD
	adminBytes = fakehost.AdminBytes
	wiredHTTPD = fakehost.WiredHTTPD
)

// fixture is a fake host with a Remediator over it.
type fixture struct {
	*fakehost.Host
	root   string
	runner *fakehost.Runner
	out    *strings.Builder
	r      *Remediator
}

func newFixture(t *testing.T, kind string, files map[string]string) *fixture {
	t.Helper()
	h := fakehost.New(t, kind, files)
	e := h.Env(t, nil)
	out := &strings.Builder{}
	r, err := New(e, out)
	if err != nil {
		t.Fatal(err)
	}
	r.LockWait, r.Verify = time.Second, nil
	return &fixture{Host: h, root: h.Root, runner: h.Runner, out: out, r: r}
}

func (f *fixture) read(t *testing.T, p string) string { return f.Read(t, p) }

// outcome is how a run ended: 0 success, else the Error's Outcome (-1: another error).
func outcome(err error) Outcome {
	var re *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &re):
		return re.Outcome
	}
	return -1
}

func TestRemediateWritesTestsRestarts(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.runner.Names(); got != "configtest,restart" {
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
		steps = append(steps, string(e.Step))
	}
	if strings.Join(steps, ",") != "intent,written,done" {
		t.Fatalf("journal steps %v", steps)
	}
	if info, _ := os.Stat(f.r.State.Dir); info.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %o", info.Mode().Perm())
	}

	// A second run changes nothing: same bytes, same mtime, no command.
	before, _ := os.Stat(filepath.Join(f.root, ea4Include))
	f.runner.Reset()
	rep, err = f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Noop || f.runner.Names() != "" {
		t.Fatalf("second run: %+v, %v, ran %s", rep, err, f.runner.Names())
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
	if err != nil || !rep.Noop || f.runner.Names() != "" || f.read(t, ea4Include) != content {
		t.Fatalf("%+v %v %s", rep, err, f.runner.Names())
	}
	if !strings.Contains(f.out.String(), "admin's own") {
		t.Fatalf("output does not say who turned it off: %s", f.out)
	}
}

func TestRemediateConfigTestFailsRestoresBytes(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.Errs["configtest"] = []error{errors.New("exit status 1")}
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Failed || !strings.Contains(err.Error(), "AH00526") {
		t.Fatalf("err = %v (code %d), want exit 1 with the config test's output", err, outcome(err))
	}
	if got := f.runner.Names(); got != "configtest" {
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
	f.runner.Errs["restart"] = []error{errors.New("exit status 1")}
	var atSecondRestart string
	f.runner.Hook["restart"] = func() { atSecondRestart = f.read(t, ea4Include) }
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Failed {
		t.Fatalf("err = %v", err)
	}
	if got := f.runner.Names(); got != "configtest,restart,restart" {
		t.Fatalf("ran %s", got)
	}
	if atSecondRestart != adminBytes || f.read(t, ea4Include) != adminBytes {
		t.Fatal("second restart did not run on the restored bytes")
	}
}

func TestRemediateRestartFailsTwiceSaysApacheMayBeDown(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.Errs["restart"] = []error{errors.New("exit status 1"), errors.New("exit status 1")}
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Failed || !strings.Contains(err.Error(), "may be down") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != adminBytes {
		t.Fatal("include not restored")
	}
}

func TestRemediateNotWiredRebuilds(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: "SSLUseStapling On\n"})
	f.runner.Hook["rebuild"] = func() {
		// rebuildhttpdconf adds the Include line now that the file exists.
		if _, err := os.Stat(filepath.Join(f.root, ea4Include)); err == nil {
			os.WriteFile(filepath.Join(f.root, ea4HTTPD), []byte(wiredHTTPD), 0o644)
		}
	}
	os.MkdirAll(filepath.Join(f.root, filepath.Dir(ea4Include)), 0o755)
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if got := f.runner.Names(); got != "rebuild,configtest,restart" {
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
	if outcome(err) != Refused || !strings.Contains(err.Error(), "still does not include") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, ea4Include)); !os.IsNotExist(err) {
		t.Fatal("include created by us was not removed")
	}
	// The second rebuild makes httpd.conf match the restored files (our include gone).
	if got := f.runner.Names(); got != "rebuild,rebuild" {
		t.Fatalf("ran %s", got)
	}
}

func TestRemediateEA3NotWiredRefusesWritesNothing(t *testing.T) {
	inc := "/usr/local/apache/conf/includes/pre_virtualhost_global.conf"
	f := newFixture(t, "ea3", map[string]string{"/usr/local/apache/conf/httpd.conf": "SSLUseStapling On\n", inc: "x\n"})
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Refused || !strings.Contains(err.Error(), "EA3") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, inc) != "x\n" || f.runner.Names() != "" {
		t.Fatal("refusal changed something")
	}
}

func TestRemediateEA3Wired(t *testing.T) {
	inc := "/usr/local/apache/conf/includes/pre_virtualhost_global.conf"
	f := newFixture(t, "ea3", map[string]string{
		"/usr/local/apache/conf/httpd.conf": "ServerRoot /usr/local/apache\n" + fakehost.LoadModules + "SSLUseStapling On\nInclude conf/includes/pre_virtualhost_global.conf\n",
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
	f.r.State.Append(state.Entry{Action: state.Remediate, Step: state.Written, File: ea4Include, Result: state.OK})
	stale := filepath.Join(f.root, filepath.Dir(ea4Include), ".stapling-agent-pre_virtualhost_global.conf.99.tmp")
	os.WriteFile(stale, []byte("half"), 0o644)

	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Finished || rep.Changed {
		t.Fatalf("%+v %v", rep, err)
	}
	if got := f.runner.Names(); got != "configtest,restart" {
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
	if f.runner.Names() != "" || f.read(t, ea4Include) != adminBytes {
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
	f.runner.Reset()
	rep, err := f.r.Revert(context.Background(), false)
	if err != nil || !rep.Changed || rep.After != "on" {
		t.Fatalf("%+v %v", rep, err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.Names() != "configtest,restart" {
		t.Fatalf("revert: include %q, ran %s", f.read(t, ea4Include), f.runner.Names())
	}
	f.runner.Reset()
	rep, err = f.r.Revert(context.Background(), false)
	if err != nil || !rep.Noop || f.runner.Names() != "" {
		t.Fatalf("nothing to revert: %+v %v", rep, err)
	}
}

func TestRevertRefusesWithoutStaplingCache(t *testing.T) {
	httpd := strings.Replace(wiredHTTPD, "SSLStaplingCache shmcb:/run/apache2/stapling(256000)\n", "", 1)
	block, _ := apacheconf.ApplyBlock(nil)
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: string(block)})
	_, err := f.r.Revert(context.Background(), false)
	if outcome(err) != Refused || !strings.Contains(err.Error(), "AH01958") {
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
			before := fakehost.SnapshotTree(t, filepath.Join(f.root, "etc"))
			_, err := f.r.Remediate(context.Background(), false)
			if outcome(err) != Refused {
				t.Fatalf("err = %v (code %d), want refused", err, outcome(err))
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if after := fakehost.SnapshotTree(t, filepath.Join(f.root, "etc")); after != before || f.runner.Names() != "" {
				t.Fatal("refusal changed the tree or ran a command")
			}
		})
	}
}

// fakeVerifier answers handshakes from a script: ok until broken is set.
type fakeVerifier struct{ broken *bool }

func (v fakeVerifier) Handshake(_ context.Context, t probe.Target) (time.Duration, bool, error) {
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
	f.runner.Hook["restart"] = func() { broken = !broken } // the new config breaks it; the old one mends it
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Failed || !strings.Contains(err.Error(), "verification failed") || !strings.Contains(err.Error(), "a.example") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.Names() != "configtest,restart,restart" {
		t.Fatalf("include %q, ran %s", f.read(t, ea4Include), f.runner.Names())
	}
}

// Errors keep their cause: the command's error after a failed config test, and a timeout
// that stays a timeout.
func TestErrorsWrapTheirCause(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.Errs["configtest"] = []error{errors.New("exit status 1")}
	_, err := f.r.Remediate(context.Background(), false)
	var ce *apacheconf.CmdError
	if !errors.As(err, &ce) || ce.Argv[0] != "configtest" || outcome(err) != Failed {
		t.Fatalf("errors.As(CmdError) lost through the rollback: %v", err)
	}

	f = newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	f.runner.Errs["restart"] = []error{context.DeadlineExceeded}
	_, err = f.r.Remediate(context.Background(), false)
	if !errors.Is(err, context.DeadlineExceeded) || outcome(err) != Failed {
		t.Fatalf("a restart timeout is not errors.Is(DeadlineExceeded): %v", err)
	}
	if f.read(t, ea4Include) != adminBytes {
		t.Fatal("not rolled back")
	}
}

// changingVerifier saves the include as an admin would, in WHM's Include Editor, the first
// time it is called: between our plan and our write.
type changingVerifier struct {
	t     *testing.T
	path  string
	calls *int
}

func (v changingVerifier) Handshake(context.Context, probe.Target) (time.Duration, bool, error) {
	if *v.calls++; *v.calls == 1 {
		if err := os.WriteFile(v.path, []byte("# edited by the admin meanwhile\nKeepAliveTimeout 7\n"), 0o644); err != nil {
			v.t.Error(err)
		}
	}
	return time.Millisecond, true, nil
}

// An admin who saves the include between our read and our write is not overwritten: the write
// notices, and the change is planned again from the admin's new bytes.
func TestRemediateReplansWhenTheIncludeChanges(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	calls := 0
	f.r.Verify = changingVerifier{t, filepath.Join(f.root, ea4Include), &calls}
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	got := f.read(t, ea4Include)
	if !strings.HasPrefix(got, "# edited by the admin meanwhile\nKeepAliveTimeout 7\n# BEGIN stapling-agent") {
		t.Fatalf("the admin's edit was lost or not re-planned: %q", got)
	}
	entries, _ := f.r.State.Journal()
	var steps []string
	for _, e := range entries {
		steps = append(steps, string(e.Step))
	}
	if strings.Join(steps, ",") != "intent,noop,intent,written,done" || f.runner.Names() != "configtest,restart" {
		t.Fatalf("journal %v, ran %s", steps, f.runner.Names())
	}
}

// Assess answers with the same plan and refusals a real run applies.
func TestAssess(t *testing.T) {
	offBlock, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	cases := []struct {
		name  string
		kind  string
		files map[string]string
		want  string // Effective IncludeOff Wired refused?
	}{
		{"stapling on, wired", "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes}, "on false true false"},
		{"our block in place", "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: string(offBlock)}, "off true true false"},
		{"include not wired (EA4 rebuilds)", "ea4", map[string]string{ea4HTTPD: "SSLUseStapling On\n", ea4Include: adminBytes}, "on false false false"},
		{"include not wired on EA3: refused", "ea3", map[string]string{"/usr/local/apache/conf/httpd.conf": "SSLUseStapling On\n",
			"/usr/local/apache/conf/includes/pre_virtualhost_global.conf": "x\n"}, "on false false true"},
		{"unreadable config (an Include cycle): refused", "ea4", map[string]string{ea4HTTPD: "Include /etc/apache2/conf/httpd.conf\n", ea4Include: adminBytes}, "unknown false false true"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := fakehost.New(t, c.kind, c.files)
			a := Assess(h.Layout)
			f := a.Facts
			if got := strings.Join([]string{string(f.Effective), boolStr(f.IncludeOff), boolStr(f.Wired), boolStr(f.Refusal != "")}, " "); got != c.want {
				t.Fatalf("facts %q, want %q (refusal %q)", got, c.want, f.Refusal)
			}
			if f.Include != h.Layout.Include {
				t.Fatalf("include %q", f.Include)
			}
		})
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// No effect, no restart: a global `SSLUseStapling On` read after the include (post-VirtualHost
// include, or the version-specific _2.conf read after _global) would win over our block. The
// change is refused before anything is written, naming the line that defeats it; the audit's
// assessment says the same.
func TestRemediateRefusesWhenALaterGlobalOnWins(t *testing.T) {
	post := "/etc/apache2/conf.d/includes/post_virtualhost_global.conf"
	httpd := wiredHTTPD + "Include \"" + post + "\"\n"
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: adminBytes, post: "# admin\nSSLUseStapling On\n"})
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Refused || !strings.Contains(err.Error(), post+":2") || !strings.Contains(err.Error(), "no effect") {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.Names() != "" {
		t.Fatal("wrote or ran something")
	}
	if a := Assess(f.Layout); !strings.Contains(a.Facts.Refusal, post+":2") {
		t.Fatalf("assessment: %q", a.Facts.Refusal)
	}

	// Every global On after the last global Off is named (removing only the winner would let
	// the one before it win); an On that a later Off already beats is not.
	v2 := "/etc/apache2/conf.d/includes/pre_virtualhost_2.conf"
	httpd = wiredHTTPD + "Include \"" + v2 + "\"\nInclude \"" + post + "\"\n"
	f = newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: adminBytes,
		v2: "SSLUseStapling On\nSSLUseStapling off\nSSLUseStapling on\n", post: "# admin\nSSLUseStapling On\n"})
	_, err = f.r.Remediate(context.Background(), false)
	want := "2 global `SSLUseStapling On` lines are read after it (" + v2 + ":3, " + post + ":2)"
	if outcome(err) != Refused || !strings.Contains(err.Error(), want) || f.runner.Names() != "" {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// Conditional sections are evaluated as Apache does: an admin's off inside `<IfModule mod_ssl>`
// (not a name Apache knows) does not count, so the fix is still written; one inside
// `<IfVersion >= 2.4>` does.
func TestRemediateSeesConditionalsAsApacheDoes(t *testing.T) {
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: "<IfModule mod_ssl>\nSSLUseStapling off\n</IfModule>\n"})
	if a := Assess(f.Layout); a.Facts.Effective != apacheconf.StaplingOn {
		t.Fatalf("effective %s: <IfModule mod_ssl> was taken as true", a.Facts.Effective)
	}
	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Changed || rep.After != apacheconf.StaplingOff {
		t.Fatalf("%+v %v", rep, err)
	}
	f = newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: "<IfVersion >= 2.4>\nSSLUseStapling off\n</IfVersion>\n"})
	if a := Assess(f.Layout); a.Facts.Effective != apacheconf.StaplingOff {
		t.Fatalf("effective %s: <IfVersion >= 2.4> was not applied", a.Facts.Effective)
	}
}

// RemediateAssessed writes from the plan Assess made, without reading the config again (the
// daemon keeps the assessment current by the state of every file it was read from). Proof: a
// later global On that appears after the assessment is not seen by it, and is by Remediate.
// A plan whose include changed since, or made for another layout, is not used.
func TestRemediateAssessedReusesThePlan(t *testing.T) {
	post := "/etc/apache2/conf.d/includes/post_virtualhost_global.conf"
	httpd := wiredHTTPD + "Include \"" + post + "\"\n"
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: adminBytes, post: "# admin\n"})
	if a := Assess(f.Layout); a.plan != nil {
		t.Fatal("Assess keeps the plan")
	}
	a := AssessPlanned(f.Layout)
	if a.Facts.Refusal != "" {
		t.Fatal(a.Facts.Refusal)
	}
	fakehost.Write(t, f.root, post, "SSLUseStapling On\n")
	if _, err := f.r.Remediate(context.Background(), true); err == nil {
		t.Fatal("a fresh plan does not see the later On")
	}
	if rep, err := f.r.RemediateAssessed(context.Background(), &a); err != nil || !rep.Changed {
		t.Fatalf("assessed plan not used: %+v %v", rep, err)
	}

	// The include changed after the assessment: planned afresh (and refused, the On wins).
	f = newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: adminBytes, post: "# admin\n"})
	a = AssessPlanned(f.Layout)
	fakehost.Write(t, f.root, post, "SSLUseStapling On\n")
	fakehost.Write(t, f.root, ea4Include, adminBytes+"\n")
	if _, err := f.r.RemediateAssessed(context.Background(), &a); outcome(err) != Refused {
		t.Fatalf("stale plan used after the include changed: %v", err)
	}
	// Another layout (a reload asked httpd again): planned afresh.
	f = newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: adminBytes, post: "# admin\n"})
	other := *f.Layout
	a = AssessPlanned(&other)
	fakehost.Write(t, f.root, post, "SSLUseStapling On\n")
	if _, err := f.r.RemediateAssessed(context.Background(), &a); outcome(err) != Refused {
		t.Fatalf("plan of another layout used: %v", err)
	}
}
