package remediate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// A host with a.example (an ordinary certificate) and ms.example (Must-Staple), owned by
// msuser, whose cPanel userdata include line is as given: wired (msWired), or commented out as
// cPanel writes it while the directory does not exist (msNotWired).
const (
	msCert     = "/etc/apache2/ssl/ms.example.combined"
	msDir      = "/etc/apache2/conf.d/userdata/ssl/2_4/msuser/ms.example"
	msExempt   = msDir + "/" + apacheconf.ExemptFileName
	msWired    = `  Include "` + msDir + `/*.conf"` + "\n"
	msNotWired = `  # Include "` + msDir + `/*.conf"` + "\n"
)

func msHTTPD(includeLine string) string {
	return wiredHTTPD + "<VirtualHost *:443>\nServerName ms.example\nSSLEngine on\nSSLCertificateFile " + msCert + "\n" +
		"<IfModule suexec_module>\n  SuexecUserGroup msuser msuser\n</IfModule>\n" + includeLine + "</VirtualHost>\n"
}

func newMSFixture(t *testing.T, includeLine string, mode config.MustStaple) *fixture {
	t.Helper()
	f := newFixture(t, "ea4", map[string]string{
		ea4HTTPD: msHTTPD(includeLine), ea4Include: adminBytes,
		msCert: fakehost.Cert(t, "ms.example", fakehost.Responder, true),
	})
	f.r.MustStaple = mode
	if includeLine == msWired {
		// cPanel's Include (not IncludeOptional) needs the directory: it exists, empty.
		os.MkdirAll(filepath.Join(f.root, msDir), 0o755)
	}
	return f
}

// stapling reads the host's config and says, per SSL vhost, whether stapling is on.
func stapling(t *testing.T, l *apacheconf.Layout) map[string]bool {
	t.Helper()
	c, err := apacheconf.ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, v := range c.VHosts {
		if v.SSL {
			out[v.Name()] = c.StaplingOf(v)
		}
	}
	return out
}

// tree renders every path, mode and content under dir (not mtimes: a restore renames into
// the directory, which changes its mtime).
func tree(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		sb.WriteString(p + " " + info.Mode().String())
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			sb.Write(b)
		}
		sb.WriteByte('\n')
		return nil
	})
	return sb.String()
}

func steps(t *testing.T, s *state.State) []state.Entry {
	t.Helper()
	entries, err := s.Journal()
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// Exempt (the default): one transaction writes the exemption file and the block; the reading
// after has stapling on for exactly the Must-Staple vhost; the journal lists both files; the
// audit's assessment said the same beforehand; a second run is a no-op.
func TestExemptWritesBothFiles(t *testing.T) {
	f := newMSFixture(t, msWired, "") // unset: exempt
	a := Assess(f.Layout)
	if a.Facts.Refusal != "" || len(a.Exempt) != 1 || !strings.Contains(a.Exempt[0], "ms.example") || a.MustStaple != config.MustStapleExempt {
		t.Fatalf("assessment: refusal %q, exempt %v", a.Facts.Refusal, a.Exempt)
	}
	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.runner.Names(); got != "configtest,restart" {
		t.Fatalf("ran %s", got)
	}
	if f.read(t, msExempt) != string(apacheconf.ExemptContent()) || !apacheconf.InspectInclude([]byte(f.read(t, ea4Include))).ManagedBlock {
		t.Fatalf("files: exemption %q, include %q", f.read(t, msExempt), f.read(t, ea4Include))
	}
	if got := stapling(t, f.Layout); got["a.example"] || !got["ms.example"] {
		t.Fatalf("stapling after: %v", got)
	}
	if !rep.Changed || rep.After != apacheconf.StaplingMixed || len(rep.Exempted) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if strings.Contains(f.out.String(), "still turn stapling on themselves") || !strings.Contains(f.out.String(), "stapling kept on for Must-Staple vhosts: ms.example") {
		t.Fatalf("output:\n%s", f.out)
	}
	var names []string
	for _, e := range steps(t, f.r.State) {
		names = append(names, string(e.Step))
		if e.File != ea4Include || !slices.Equal(e.Files, []string{msExempt, ea4Include}) {
			t.Fatalf("entry %+v: want file the include and files [exemption include]", e)
		}
	}
	if strings.Join(names, ",") != "intent,written,done" {
		t.Fatalf("journal %v", names)
	}

	f.runner.Reset()
	rep, err = f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Noop || f.runner.Names() != "" {
		t.Fatalf("second run: %+v %v ran %q", rep, err, f.runner.Names())
	}
	if a := Assess(f.Layout); a.Facts.Refusal != "" || len(a.Exempt) != 0 {
		t.Fatalf("after: %q %v", a.Facts.Refusal, a.Exempt)
	}
}

// Veto: today's refusal, nothing written, and the assessment refuses the same way.
func TestVetoRefusesAsToday(t *testing.T) {
	f := newMSFixture(t, msWired, config.MustStapleVeto)
	before := fakehost.SnapshotTree(t, f.root)
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Refused || !strings.Contains(err.Error(), "Must-Staple") || !strings.Contains(err.Error(), "ms.example") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("err = %v", err)
	}
	if fakehost.SnapshotTree(t, f.root) != before || f.runner.Names() != "" {
		t.Fatal("a refusal changed something")
	}
	a := AssessFor(f.Layout, config.MustStapleVeto)
	if !strings.Contains(a.Facts.Refusal, "refusing to turn OCSP stapling off: 1 SSL vhost(s) serve a Must-Staple certificate") || len(a.Exempt) != 0 {
		t.Fatalf("assessment: %q %v", a.Facts.Refusal, a.Exempt)
	}
	// --force: off for everyone, no exemption.
	f.r.Force = true
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if got := stapling(t, f.Layout); got["ms.example"] || got["a.example"] {
		t.Fatalf("forced: %v", got)
	}
	if _, err := os.Stat(filepath.Join(f.root, msExempt)); !os.IsNotExist(err) {
		t.Fatal("veto wrote an exemption")
	}
}

// A failing config test or restart restores every file byte for byte: the include's bytes
// come back, the exemption file and the directories made for it go (the tree is as before).
func TestExemptFailureRestoresEveryFile(t *testing.T) {
	for _, tc := range []struct{ fail, ran string }{
		{"configtest", "configtest"},
		{"restart", "configtest,restart,restart"},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			f := newMSFixture(t, msWired, config.MustStapleExempt)
			os.Remove(filepath.Join(f.root, msDir)) // the directory is ours to make (and remove)
			f.runner.Errs[tc.fail] = []error{errors.New("exit status 1")}
			before := tree(t, filepath.Join(f.root, "etc"))
			_, err := f.r.Remediate(context.Background(), false)
			if outcome(err) != Failed || !strings.Contains(err.Error(), "restored "+msExempt+", "+ea4Include+" byte for byte") {
				t.Fatalf("err = %v", err)
			}
			if got := f.runner.Names(); got != tc.ran {
				t.Fatalf("ran %s", got)
			}
			if after := tree(t, filepath.Join(f.root, "etc")); after != before {
				t.Fatalf("not restored:\nbefore %s\nafter  %s", before, after)
			}
			entries := steps(t, f.r.State)
			if last := entries[len(entries)-1]; last.Step != state.RolledBack || len(last.Files) != 2 {
				t.Fatalf("last entry %+v", last)
			}
		})
	}
}

// cPanel writes the userdata Include line only for directories that existed at the last
// rebuild: the exemption's directory is made, rebuildhttpdconf wires it, and the reading after
// the rebuild is checked; a revert removes the directory with our file and rebuilds again. A
// failure after the rebuild, or a rebuild that wires nothing, restores every file, httpd.conf
// as it was before the rebuild included, and removes the directories made.
func TestExemptNotWiredRebuilds(t *testing.T) {
	f := newMSFixture(t, msNotWired, config.MustStapleExempt)
	// Like cPanel's: the vhost's Include line is written for a directory that exists,
	// commented out otherwise.
	rebuild := func() {
		if _, err := os.Stat(filepath.Join(f.root, msDir)); err == nil {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msWired))
		} else {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msNotWired))
		}
	}
	f.runner.Hook["rebuild"] = rebuild
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if got := f.runner.Names(); got != "rebuild,configtest,restart" {
		t.Fatalf("ran %s", got)
	}
	if got := stapling(t, f.Layout); got["a.example"] || !got["ms.example"] {
		t.Fatalf("stapling after: %v", got)
	}

	// Revert: the directory goes with our file (cPanel's Include fails on a glob matching
	// nothing) and the rebuild turns the line back into a comment.
	f.runner.Reset()
	f.runner.Hook["rebuild"] = func() {
		if _, err := os.Stat(filepath.Join(f.root, msDir)); os.IsNotExist(err) {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msNotWired))
		}
	}
	if _, err := f.r.Revert(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, msDir)); !os.IsNotExist(err) || f.runner.Names() != "rebuild,configtest,restart" || f.read(t, ea4HTTPD) != msHTTPD(msNotWired) {
		t.Fatalf("revert: dir %v, ran %s", err, f.runner.Names())
	}

	// A config test failing after the rebuild: every file comes back, the directories made
	// go, and httpd.conf is rebuilt to match (in the daemon's sandbox it cannot be written:
	// the rebuild runs through PID 1), so it is as it was before.
	f = newMSFixture(t, msNotWired, config.MustStapleExempt)
	f.runner.Hook["rebuild"] = rebuild
	f.runner.Errs["configtest"] = []error{errors.New("exit status 1")}
	before := tree(t, filepath.Join(f.root, "etc"))
	if _, err := f.r.Remediate(context.Background(), false); outcome(err) != Failed {
		t.Fatalf("err = %v", err)
	}
	if after := tree(t, filepath.Join(f.root, "etc")); after != before || f.runner.Names() != "rebuild,configtest,rebuild" {
		t.Fatalf("not restored (ran %s):\nbefore %s\nafter  %s", f.runner.Names(), before, after)
	}
	// The second rebuild fails too: httpd.conf's previous bytes are written back.
	f = newMSFixture(t, msNotWired, config.MustStapleExempt)
	f.runner.Hook["rebuild"] = rebuild
	f.runner.Errs["configtest"] = []error{errors.New("exit status 1")}
	f.runner.Errs["rebuild"] = []error{nil, errors.New("exit status 1")}
	before = tree(t, filepath.Join(f.root, "etc"))
	if _, err := f.r.Remediate(context.Background(), false); outcome(err) != Failed {
		t.Fatalf("err = %v", err)
	}
	if after := tree(t, filepath.Join(f.root, "etc")); after != before {
		t.Fatalf("not restored when the second rebuild failed:\nbefore %s\nafter  %s", before, after)
	}

	f = newMSFixture(t, msNotWired, config.MustStapleExempt)
	_, err := f.r.Remediate(context.Background(), false) // the rebuild wires nothing
	if outcome(err) != Refused || !strings.Contains(err.Error(), "ms.example does not read "+msExempt) {
		t.Fatalf("err = %v", err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.Names() != "rebuild,rebuild" { // the second makes httpd.conf match again
		t.Fatalf("include %q, ran %s", f.read(t, ea4Include), f.runner.Names())
	}
	if _, err := os.Stat(filepath.Join(f.root, "/etc/apache2/conf.d/userdata")); !os.IsNotExist(err) {
		t.Fatal("exemption file or directories left")
	}
}

// A run killed after the first file of the transaction (the exemption) is finished by the next
// run: it plans again from the files as they are, writes the block, tests and restarts.
func TestExemptCrashAfterFirstFileIsFinished(t *testing.T) {
	f := newMSFixture(t, msWired, config.MustStapleExempt)
	fakehost.Write(t, f.root, msExempt, string(apacheconf.ExemptContent()))
	fakehost.Write(t, f.root, msDir+"/.stapling-agent-"+apacheconf.ExemptFileName+".7.tmp", "half")
	f.r.State.Ensure()
	f.r.State.Append(state.Entry{Action: state.Remediate, Step: state.Intent, File: ea4Include, Files: []string{msExempt, ea4Include}, Result: state.OK})

	rep, err := f.r.Remediate(context.Background(), false)
	if err != nil || !rep.Finished || !rep.Changed {
		t.Fatalf("%+v %v", rep, err)
	}
	if got := f.runner.Names(); got != "configtest,restart" {
		t.Fatalf("ran %s", got)
	}
	if got := stapling(t, f.Layout); got["a.example"] || !got["ms.example"] {
		t.Fatalf("stapling after: %v", got)
	}
	if _, err := os.Stat(filepath.Join(f.root, msDir, ".stapling-agent-"+apacheconf.ExemptFileName+".7.tmp")); !os.IsNotExist(err) {
		t.Fatal("stale temp file left")
	}
	if u, _ := f.r.State.Unfinished(ea4Include); u != nil {
		t.Fatalf("still unfinished: %+v", u)
	}

	// Killed after the exemption file but before the rebuild that wires it: the next run
	// sees our bytes already there and rebuilds.
	f = newMSFixture(t, msNotWired, config.MustStapleExempt)
	fakehost.Write(t, f.root, msExempt, string(apacheconf.ExemptContent()))
	f.runner.Hook["rebuild"] = func() { fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msWired)) }
	f.r.State.Ensure()
	f.r.State.Append(state.Entry{Action: state.Remediate, Step: state.Intent, File: ea4Include, Files: []string{msExempt, ea4Include}, Result: state.OK})
	if rep, err := f.r.Remediate(context.Background(), false); err != nil || !rep.Finished {
		t.Fatalf("%+v %v", rep, err)
	}
	if got := f.runner.Names(); got != "rebuild,configtest,restart" {
		t.Fatalf("ran %s", got)
	}
	if got := stapling(t, f.Layout); got["a.example"] || !got["ms.example"] {
		t.Fatalf("stapling after: %v", got)
	}
}

// Revert removes our block and exactly our exemption files in one transaction; a file with
// our name that an admin edited, and the admin's own files beside ours, stay.
func TestRevertRemovesExactlyOurFiles(t *testing.T) {
	f := newMSFixture(t, msWired, config.MustStapleExempt)
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	edited := "/etc/apache2/conf.d/userdata/ssl/2_4/other/o.example/" + apacheconf.ExemptFileName
	own := msDir + "/admin.conf"
	fakehost.Write(t, f.root, edited, string(apacheconf.ExemptContent())+"# mine now\n")
	fakehost.Write(t, f.root, own, "# admin's own\n")
	f.runner.Reset()
	rep, err := f.r.Revert(context.Background(), false)
	if err != nil || !rep.Changed || !slices.Equal(rep.Removed, []string{msExempt}) {
		t.Fatalf("%+v %v", rep, err)
	}
	if f.read(t, ea4Include) != adminBytes || f.runner.Names() != "configtest,restart" {
		t.Fatalf("include %q, ran %s", f.read(t, ea4Include), f.runner.Names())
	}
	if _, err := os.Stat(filepath.Join(f.root, msExempt)); !os.IsNotExist(err) {
		t.Fatal("our exemption file left")
	}
	if f.read(t, edited) != string(apacheconf.ExemptContent())+"# mine now\n" || f.read(t, own) != "# admin's own\n" {
		t.Fatal("an admin's file was touched")
	}
	if !strings.Contains(f.out.String(), "warning: "+edited+" is not exactly stapling-agent's exemption") {
		t.Fatalf("no warning for the edited file:\n%s", f.out)
	}
	if got := stapling(t, f.Layout); !got["a.example"] || !got["ms.example"] {
		t.Fatalf("stapling after revert: %v", got)
	}
	entries := steps(t, f.r.State)
	if last := entries[len(entries)-1]; last.Action != state.Revert || last.Step != state.Done || !slices.Equal(last.Files, []string{ea4Include, msExempt}) {
		t.Fatalf("last entry %+v", last)
	}
	f.runner.Reset()
	if rep, err := f.r.Revert(context.Background(), false); err != nil || !rep.Noop || f.runner.Names() != "" {
		t.Fatalf("second revert: %+v %v", rep, err)
	}
}

// A Must-Staple vhost that cannot be exempted (no account, no userdata include) refuses the
// remediation in exempt mode too, naming it and why; --force turns stapling off for it.
func TestExemptRefusesWhatItCannotExempt(t *testing.T) {
	httpd := wiredHTTPD + "<VirtualHost *:443>\nServerName ms.example\nSSLEngine on\nSSLCertificateFile " + msCert + "\n</VirtualHost>\n"
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: httpd, ea4Include: adminBytes, msCert: fakehost.Cert(t, "ms.example", fakehost.Responder, true)})
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Refused || !strings.Contains(err.Error(), "ms.example") || !strings.Contains(err.Error(), "Must-Staple") || !strings.Contains(err.Error(), "no cPanel account") {
		t.Fatalf("err = %v", err)
	}
	if a := Assess(f.Layout); a.Facts.Refusal == "" {
		t.Fatal("the assessment does not refuse")
	}
	f.r.Force = true
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if got := stapling(t, f.Layout); got["ms.example"] {
		t.Fatalf("forced: %v", got)
	}
}

// A dry run shows the exemption file and the block and touches nothing.
func TestExemptDryRun(t *testing.T) {
	f := newMSFixture(t, msNotWired, config.MustStapleExempt)
	before := fakehost.SnapshotTree(t, f.root)
	if _, err := f.r.Remediate(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	out := f.out.String()
	if !strings.Contains(out, "would create "+msExempt) || !strings.Contains(out, "+    SSLUseStapling on") || !strings.Contains(out, "would run: rebuild") {
		t.Fatalf("dry run said:\n%s", out)
	}
	if fakehost.SnapshotTree(t, f.root) != before || f.runner.Names() != "" {
		t.Fatal("dry run changed something")
	}
}

// A restore that cannot tidy everything up (an admin saved a file in the directory we made,
// so it cannot go) still restarts Apache on what is on disk: a leftover directory is no
// reason to leave Apache on a config we are taking back.
func TestRollbackRestartsDespiteLeftovers(t *testing.T) {
	f := newMSFixture(t, msNotWired, config.MustStapleExempt)
	f.runner.Hook["rebuild"] = func() {
		if _, err := os.Stat(filepath.Join(f.root, msDir)); err == nil {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msWired))
		} else {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msNotWired))
		}
	}
	f.runner.Hook["restart"] = func() { fakehost.Write(t, f.root, msDir+"/admin.conf", "# the admin's\n") }
	f.runner.Errs["restart"] = []error{errors.New("exit status 1")}
	_, err := f.r.Remediate(context.Background(), false)
	if outcome(err) != Failed || strings.Contains(err.Error(), "restore by hand") {
		t.Fatalf("err = %v", err)
	}
	if got := f.runner.Names(); got != "rebuild,configtest,restart,rebuild,restart" {
		t.Fatalf("ran %s: Apache not restarted on the restored config", got)
	}
	if f.read(t, ea4Include) != adminBytes || !strings.Contains(f.out.String(), "left after the restore") {
		t.Fatalf("include %q, output %s", f.read(t, ea4Include), f.out.String())
	}
	if _, err := os.Stat(filepath.Join(f.root, msExempt)); !os.IsNotExist(err) {
		t.Fatal("our exemption file left")
	}
}

// A revert that leaves no *.conf in the exemption's directory (only an admin's README) keeps
// the directory but rebuilds httpd.conf: cPanel writes the vhost's Include only when a *.conf
// matches, and Apache fails on a plain Include whose wildcard matches nothing.
func TestRevertRebuildsWhenNoConfIsLeft(t *testing.T) {
	f := newMSFixture(t, msNotWired, config.MustStapleExempt)
	f.runner.Hook["rebuild"] = func() {
		if m, _ := filepath.Glob(filepath.Join(f.root, msDir, "*.conf")); len(m) > 0 {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msWired))
		} else {
			fakehost.Write(t, f.root, ea4HTTPD, msHTTPD(msNotWired))
		}
	}
	if _, err := f.r.Remediate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	fakehost.Write(t, f.root, msDir+"/README", "the admin's notes\n")
	f.runner.Reset()
	if _, err := f.r.Revert(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if f.runner.Names() != "rebuild,configtest,restart" || f.read(t, ea4HTTPD) != msHTTPD(msNotWired) || f.read(t, msDir+"/README") != "the admin's notes\n" {
		t.Fatalf("ran %s; httpd.conf %q", f.runner.Names(), f.read(t, ea4HTTPD))
	}
}
