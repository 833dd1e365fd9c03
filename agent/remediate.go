package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// Remediator turns OCSP stapling off (Remediate) or back to the admin's setting (Revert) in
// the pre-VirtualHost include, and never leaves Apache on a config it did not test: every
// change is config-tested and restarted, and restored byte for byte if either fails.
type Remediator struct {
	Layout   *apacheconf.Layout
	Cmds     apacheconf.Commands
	Runner   apacheconf.Runner
	State    *State
	Log      zerolog.Logger
	Out      io.Writer // the human report (stdout)
	LockWait time.Duration
	Now      func() time.Time
	// Force turns stapling off even for vhosts serving Must-Staple certificates (remediate
	// --force; the daemon never forces).
	Force bool
	// Verify, when set, handshakes with the local SSL vhosts before the change and after the
	// restart; a vhost that served before and fails after triggers the rollback.
	Verify Verifier
}

// Verifier handshakes with one SSL vhost.
type Verifier interface {
	Handshake(ctx context.Context, t probeTarget) (time.Duration, bool, error) // duration, stapled, error
}

// TLSVerifier is the real Verifier.
type TLSVerifier struct{ Timeout time.Duration }

func (v TLSVerifier) Handshake(ctx context.Context, t probeTarget) (time.Duration, bool, error) {
	c, d, err := dialTLS(ctx, t.address, &tls.Config{ServerName: t.servername, InsecureSkipVerify: true}, v.Timeout)
	if err != nil {
		return d, false, err
	}
	defer c.Close()
	return d, len(c.ConnectionState().OCSPResponse) > 0, nil
}

// maxVerify bounds the handshakes a remediation makes: during an outage each may wait the
// responder timeout, and a cPanel host can have thousands of vhosts.
const maxVerify = 10

// Report says what a Remediate or Revert call saw and did, for the daemon and the JSON audit.
type Report struct {
	Action   string // remediate | revert
	Changed  bool   // the include's bytes changed
	Finished bool   // an interrupted earlier run was completed
	Noop     bool
	Backup   string
	Before   apacheconf.IncludeState
	After    string // effective stapling after the change: on | off | mixed
}

// ExitError carries the process exit code for an error: 1 failed (and rolled back),
// 2 refused (nothing changed).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitRefused = 2
	ExitUnknown = 3
)

func refused(format string, a ...any) error {
	return &ExitError{Code: ExitRefused, Err: fmt.Errorf(format, a...)}
}

func failed(format string, a ...any) error {
	return &ExitError{Code: ExitFailed, Err: fmt.Errorf(format, a...)}
}

// plan is everything a change needs, computed by reading only.
type plan struct {
	action  string
	snap    *apacheconf.FileSnapshot
	before  apacheconf.IncludeState
	next    []byte
	changed bool
	wired   bool
	after   *apacheconf.Config // the config as it would read with next in place
	// mustStaple lists SSL vhosts that would lose stapling while serving a Must-Staple
	// certificate.
	mustStaple []string
}

func (r *Remediator) plan(action string) (*plan, error) {
	l := r.Layout
	dir := path.Dir(l.Include)
	if info, err := os.Stat(l.Path(dir)); err != nil || !info.IsDir() {
		return nil, refused("include directory %s does not exist; is this a cPanel host? (EA %s layout)", dir, l.Kind)
	}
	snap, err := apacheconf.Snapshot(l.Path(l.Include))
	if err != nil {
		return nil, refused("%v", err)
	}
	if bytes.IndexByte(snap.Data, 0) >= 0 {
		return nil, refused("%s contains NUL bytes; not an Apache config file, fix it by hand first", l.Include)
	}
	p := &plan{action: action, snap: snap, before: apacheconf.InspectInclude(snap.Data)}
	if action == "remediate" {
		p.next, p.changed = apacheconf.ApplyBlock(snap.Data)
	} else {
		p.next, p.changed = apacheconf.RemoveBlock(snap.Data)
	}
	cfg, err := apacheconf.ReadConfigWith(l, map[string][]byte{l.Include: p.next})
	if err != nil {
		return nil, refused("read Apache config: %v", err)
	}
	p.after = cfg
	p.wired = cfg.Includes(l.Root, l.Include)
	if action == "remediate" && p.changed {
		if before, err := apacheconf.ReadConfig(l); err == nil {
			p.mustStaple = losingMustStaple(l, before, cfg)
		}
	}
	return p, nil
}

// losingMustStaple names the SSL vhosts whose stapling is on before and off after, and whose
// certificate is Must-Staple (TLS Feature status_request): Firefox hard-fails on them without
// a staple (FACTS.md section 4).
func losingMustStaple(l *apacheconf.Layout, before, after *apacheconf.Config) []string {
	var out []string
	for i, v := range before.VHosts {
		if !v.SSL || v.CertFile == "" || i >= len(after.VHosts) {
			continue
		}
		if !stapling(v, before.Global) || stapling(after.VHosts[i], after.Global) {
			continue
		}
		if cf, err := loadCertFile(l.Path(v.CertFile)); err == nil && mustStaple(cf.leaf) {
			out = append(out, fmt.Sprintf("%s (%s:%d, %s)", v.Name(), v.File, v.Line, v.CertFile))
		}
	}
	return out
}

func stapling(v apacheconf.VHost, global string) bool {
	if v.Stapling != "" {
		return v.Stapling == "on"
	}
	return global == "on"
}

// Remediate turns stapling off. See the README for the steps; in short: lock, plan, journal
// the intent, write atomically, (rebuild if the include is not wired), config test, restart,
// journal done; any failure restores the previous bytes.
func (r *Remediator) Remediate(ctx context.Context, dryRun bool) (*Report, error) {
	return r.change(ctx, "remediate", dryRun)
}

// Revert removes exactly our managed block, with the same safety rules.
func (r *Remediator) Revert(ctx context.Context, dryRun bool) (*Report, error) {
	return r.change(ctx, "revert", dryRun)
}

func (r *Remediator) change(ctx context.Context, action string, dryRun bool) (*Report, error) {
	if dryRun {
		return r.dryRun(action)
	}
	// Refuse bad input before creating or locking anything: a refusal changes nothing on
	// disk, our state directory included. The same checks run again under the lock.
	if p, err := r.plan(action); err != nil {
		return nil, err
	} else if err := r.guard(p); err != nil {
		return nil, err
	}
	if err := r.State.Ensure(); err != nil {
		return nil, failed("%v", err)
	}
	unlock, err := r.State.Lock(ctx, r.LockWait)
	if err != nil {
		return nil, failed("%v", err)
	}
	defer unlock()

	if removed, err := apacheconf.CleanTemps(r.Layout.Path(r.Layout.Include)); err != nil {
		r.Log.Warn().Err(err).Msg("could not remove stale temp files")
	} else if len(removed) > 0 {
		r.Log.Info().Strs("files", removed).Msg("removed temp files left by an interrupted run")
	}
	unfinished, err := r.State.Unfinished(r.Layout.Include)
	if err != nil {
		return nil, failed("%v", err)
	}
	// An admin may save the include between our read and our write; the write then fails
	// with ErrChanged and we plan again from the new bytes.
	for attempt := 1; ; attempt++ {
		rep, err := r.attempt(ctx, action, unfinished)
		if !errors.Is(err, apacheconf.ErrChanged) || attempt == 3 {
			return rep, err
		}
		r.Log.Warn().Err(err).Msg("the include changed while we were writing it; planning again")
	}
}

func (r *Remediator) attempt(ctx context.Context, action string, unfinished *JournalEntry) (*Report, error) {
	p, err := r.plan(action)
	if err != nil {
		r.journal(action, "refused", err, "")
		return nil, err
	}
	rep := &Report{Action: action, Changed: p.changed, Before: p.before, After: p.after.EffectiveStapling()}
	if err := r.guard(p); err != nil {
		r.journal(action, "refused", err, "")
		return nil, err
	}
	if !p.changed && p.wired && unfinished == nil {
		rep.Noop = true
		r.say("%s: nothing to do: %s", action, r.noopReason(p))
		return rep, nil
	}
	var vb []handshakeResult
	if r.Verify != nil {
		vb = r.handshakes(ctx, p)
	}
	if unfinished != nil {
		rep.Finished = true
		r.say("%s: finishing an interrupted %s (last step %q at %s)", action, unfinished.Action, unfinished.Step, unfinished.Time.Format(time.RFC3339))
	}

	if p.changed {
		if p.snap.Exists {
			if rep.Backup, err = r.State.Backup(path.Base(r.Layout.Include), p.snap.Data); err != nil {
				return nil, failed("%v", err)
			}
		}
		// The intent goes to the journal before the file changes: a run killed after the
		// rename but before the restart is finished by the next run.
		if err := r.State.Append(r.entry(action, "intent", nil, rep.Backup)); err != nil {
			return nil, failed("%v", err)
		}
		if err := p.snap.WriteAtomic(p.next); err != nil {
			if errors.Is(err, apacheconf.ErrChanged) {
				r.journal(action, "noop", err, "")
				return nil, &ExitError{Code: ExitFailed, Err: err}
			}
			r.journal(action, "failed", err, "")
			return nil, failed("write %s: %v (file unchanged)", r.Layout.Include, err)
		}
		r.journal(action, "written", nil, rep.Backup)
		r.say("%s: wrote %s (%s)", action, r.Layout.Include, r.changeWords(action, rep.Backup))
	} else if unfinished == nil {
		// Unchanged content but not wired: the rebuild below is the whole change.
		if err := r.State.Append(r.entry(action, "intent", nil, "")); err != nil {
			return nil, failed("%v", err)
		}
	}

	if !p.wired {
		if err := r.rebuild(ctx, p, action); err != nil {
			return nil, err
		}
	}
	if err := r.testAndRestart(ctx, p, action); err != nil {
		return nil, err
	}
	detail := ""
	if vb != nil {
		va := r.handshakes(ctx, p)
		var broken []string
		detail = "handshakes before/after:"
		for i, b := range vb {
			a := va[i]
			detail += fmt.Sprintf(" %s %s/%s", b.name, b.show(), a.show())
			if b.err == nil && a.err != nil {
				broken = append(broken, fmt.Sprintf("%s (%v)", b.name, a.err))
			}
			if action == "remediate" && a.err == nil && a.stapled {
				r.say("%s: note: %s still sends a staple: it turns stapling on itself", action, b.name)
			}
		}
		r.say("%s: %s", action, detail)
		if len(broken) > 0 {
			return nil, r.rollback(ctx, p, action, ExitFailed, true,
				fmt.Errorf("verification failed: served before, fail after the restart: %s", strings.Join(broken, ", ")))
		}
	}
	done := r.entry(action, "done", nil, rep.Backup)
	done.Detail = detail
	r.record(done, nil)
	r.say("%s: done: effective OCSP stapling is now %s", action, rep.After)
	if rep.After == "mixed" {
		r.say("%s: warning: some SSL vhosts still turn stapling on themselves: %s", action, overrideList(p.after))
	}
	return rep, nil
}

// guard refuses changes that cannot be right whatever happens next.
func (r *Remediator) guard(p *plan) error {
	l := r.Layout
	switch {
	case p.action == "remediate" && !apacheconf.InspectInclude(p.next).StaplingOff:
		return refused("%s would not turn stapling off at global scope even with our block (an unclosed container in it?); fix the file by hand", l.Include)
	case !p.wired && l.Kind == apacheconf.KindEA3:
		return refused("%s does not include %s; add `Include \"%s\"` before the VirtualHosts by hand (EA3 has no rebuildhttpdconf)", l.HTTPDConf, l.Include, l.Include)
	case len(p.mustStaple) > 0 && !r.Force:
		return refused("refusing to turn OCSP stapling off: %d SSL vhost(s) serve a Must-Staple certificate (TLS Feature status_request), which Firefox rejects without a staple: %s; reissue those certificates without Must-Staple, or pass --force",
			len(p.mustStaple), strings.Join(p.mustStaple, "; "))
	case p.action == "revert" && p.changed && p.after.EffectiveStapling() != "off" && p.after.StaplingCache == "":
		// mod_ssl refuses to start with stapling on and no cache (AH01958).
		return refused("reverting would turn stapling on, but no SSLStaplingCache is configured (Apache would not start: AH01958); configure one first")
	}
	return nil
}

func (r *Remediator) noopReason(p *plan) string {
	if p.action == "revert" {
		return fmt.Sprintf("no stapling-agent block in %s", r.Layout.Include)
	}
	who := "by an admin's own SSLUseStapling off"
	if p.before.ManagedBlock {
		who = "by the stapling-agent block"
	}
	return fmt.Sprintf("OCSP stapling is already off at global scope in %s (%s); effective stapling: %s", r.Layout.Include, who, p.after.EffectiveStapling())
}

func (r *Remediator) changeWords(action, backup string) string {
	words := "added the managed block"
	if action == "revert" {
		words = "removed the managed block"
	}
	if backup != "" {
		words += "; previous bytes saved to " + backup
	}
	return words
}

// rebuild regenerates httpd.conf on EA4: cPanel writes the Include line for the
// pre-VirtualHost include only if the file existed at the last rebuild (ea4_main.default).
func (r *Remediator) rebuild(ctx context.Context, p *plan, action string) error {
	l := r.Layout
	if len(r.Cmds.Rebuild) == 0 {
		return r.rollback(ctx, p, action, ExitRefused, false,
			fmt.Errorf("%s does not include %s and no rebuild command is configured", l.HTTPDConf, l.Include))
	}
	r.say("%s: %s does not include %s; running %s", action, l.HTTPDConf, l.Include, strings.Join(r.Cmds.Rebuild, " "))
	if _, err := r.Runner.Run(ctx, r.Cmds.Rebuild); err != nil {
		return r.rollback(ctx, p, action, ExitFailed, false, fmt.Errorf("rebuild failed: %w", err))
	}
	cfg, err := apacheconf.ReadConfig(l)
	if err != nil {
		return r.rollback(ctx, p, action, ExitFailed, false, fmt.Errorf("read Apache config after rebuild: %w", err))
	}
	if !cfg.Includes(l.Root, l.Include) {
		return r.rollback(ctx, p, action, ExitRefused, false,
			fmt.Errorf("%s still does not include %s after %s; wire it in by hand",
				l.HTTPDConf, l.Include, strings.Join(r.Cmds.Rebuild, " ")))
	}
	p.wired = true
	r.journal(action, "rebuild", nil, "")
	return nil
}

func (r *Remediator) testAndRestart(ctx context.Context, p *plan, action string) error {
	if _, err := r.Runner.Run(ctx, r.Cmds.ConfigTest); err != nil {
		return r.rollback(ctx, p, action, ExitFailed, false, fmt.Errorf("config test failed: %w", err))
	}
	r.say("%s: config test passed: %s", action, strings.Join(r.Cmds.ConfigTest, " "))
	if _, err := r.Runner.Run(ctx, r.Cmds.Restart); err != nil {
		return r.rollback(ctx, p, action, ExitFailed, true, fmt.Errorf("restart failed: %w", err))
	}
	r.say("%s: Apache restarted: %s", action, strings.Join(r.Cmds.Restart, " "))
	return nil
}

// rollback restores the include's previous bytes and, if a restart had been attempted, runs
// the restart once more so Apache comes back on the old config.
func (r *Remediator) rollback(ctx context.Context, p *plan, action string, code int, restarted bool, cause error) error {
	l := r.Layout
	if !p.changed {
		r.journal(action, "failed", cause, "")
		return &ExitError{Code: ExitFailed, Err: fmt.Errorf("%s: %w (the include was not changed by this run)", action, cause)}
	}
	if err := p.snap.Restore(); err != nil {
		r.journal(action, "failed", fmt.Errorf("%v; restore failed: %v", cause, err), "")
		return failed("%s: %v; AND restoring %s failed: %v; restore it from %s", action, cause, l.Include, err, r.State.Dir+"/backups")
	}
	msg := fmt.Sprintf("%s: %v; restored %s byte for byte", action, cause, l.Include)
	if restarted {
		if _, err := r.Runner.Run(ctx, r.Cmds.Restart); err != nil {
			r.journal(action, "failed", fmt.Errorf("%v; restart on the old config failed: %v", cause, err), "")
			return failed("%s; restarting Apache on the old config ALSO failed, Apache may be down: %v", msg, err)
		}
		msg += " and restarted Apache on it"
	}
	step := "rolled_back"
	if code == ExitRefused {
		step = "refused"
	}
	r.journal(action, step, cause, "")
	return &ExitError{Code: code, Err: errors.New(msg)}
}

func (r *Remediator) dryRun(action string) (*Report, error) {
	p, err := r.plan(action)
	if err != nil {
		return nil, err
	}
	if err := r.guard(p); err != nil {
		return nil, err
	}
	rep := &Report{Action: action, Changed: p.changed, Before: p.before, After: p.after.EffectiveStapling()}
	r.say("dry run: %s would change nothing on disk and run nothing now", action)
	if !p.changed && p.wired {
		rep.Noop = true
		r.say("%s: nothing to do: %s", action, r.noopReason(p))
		return rep, nil
	}
	if p.changed {
		io.WriteString(r.Out, unifiedDiff(r.Layout.Include, p.snap.Data, p.next, p.snap.Exists))
	}
	if !p.wired {
		r.say("would run: %s   (%s does not include %s yet)", strings.Join(r.Cmds.Rebuild, " "), r.Layout.HTTPDConf, r.Layout.Include)
	}
	r.say("would run: %s", strings.Join(r.Cmds.ConfigTest, " "))
	r.say("would run: %s", strings.Join(r.Cmds.Restart, " "))
	r.say("effective OCSP stapling would be: %s", rep.After)
	return rep, nil
}

type handshakeResult struct {
	name    string
	dur     time.Duration
	stapled bool
	err     error
}

func (h handshakeResult) show() string {
	if h.err != nil {
		return "failed"
	}
	return fmt.Sprintf("%dms", h.dur.Milliseconds())
}

// handshakes verifies up to maxVerify local SSL vhosts, four at a time.
func (r *Remediator) handshakes(ctx context.Context, p *plan) []handshakeResult {
	targets := sslTargets(r.Layout, p.after, maxVerify)
	out := make([]handshakeResult, len(targets))
	parallel(len(targets), func(i int) {
		t := targets[i]
		d, st, err := r.Verify.Handshake(ctx, t)
		out[i] = handshakeResult{name: orDefault(t.servername, t.address), dur: d, stapled: st, err: err}
	})
	return out
}

func (r *Remediator) entry(action, step string, err error, backup string) JournalEntry {
	e := JournalEntry{Time: r.Now(), Run: runID, Action: action, Step: step, File: r.Layout.Include, Result: "ok", Backup: backup}
	if err != nil {
		e.Result, e.Error = "error", err.Error()
	}
	return e
}

// journal records a step; a journal that cannot be written is logged, not fatal, once the
// intent is safely recorded.
func (r *Remediator) journal(action, step string, err error, backup string) {
	r.record(r.entry(action, step, err, backup), err)
}

func (r *Remediator) record(e JournalEntry, err error) {
	if jerr := r.State.Append(e); jerr != nil {
		r.Log.Error().Err(jerr).Str("step", e.Step).Msg("could not write journal")
	}
	ev := r.Log.Info()
	if err != nil {
		ev = r.Log.Error().Err(err)
	}
	if e.Detail != "" {
		ev = ev.Str("detail", e.Detail)
	}
	ev.Str("action", e.Action).Str("step", e.Step).Str("file", e.File).Msg("remediation step")
}

func (r *Remediator) say(format string, a ...any) {
	fmt.Fprintf(r.Out, format+"\n", a...)
}

func overrideList(c *apacheconf.Config) string {
	var parts []string
	for _, v := range c.Overrides() {
		if v.SSL && v.Stapling == "on" {
			parts = append(parts, fmt.Sprintf("%s (%s:%d)", v.Name(), v.StaplingAt.File, v.StaplingAt.Line))
		}
	}
	return strings.Join(parts, ", ")
}

// runID identifies this process's journal entries.
var runID = fmt.Sprintf("%d-%d", time.Now().UnixNano(), os.Getpid())

// unifiedDiff renders the single contiguous change ApplyBlock or RemoveBlock makes as a
// one-hunk unified diff with up to three lines of context.
func unifiedDiff(name string, a, b []byte, existed bool) string {
	al, bl := splitLines(a), splitLines(b)
	pre := 0
	for pre < len(al) && pre < len(bl) && al[pre] == bl[pre] {
		pre++
	}
	suf := 0
	for suf < len(al)-pre && suf < len(bl)-pre && al[len(al)-1-suf] == bl[len(bl)-1-suf] {
		suf++
	}
	ctx := 3
	from := max(pre-ctx, 0)
	aEnd, bEnd := len(al)-suf, len(bl)-suf
	aTo, bTo := min(aEnd+ctx, len(al)), min(bEnd+ctx, len(bl))
	var sb strings.Builder
	src := "--- " + name
	if !existed {
		src = "--- /dev/null"
	}
	fmt.Fprintf(&sb, "%s\n+++ %s\n@@ -%s +%s @@\n", src, name, hunkRange(from, aTo), hunkRange(from, bTo))
	emit := func(prefix string, lines []string) {
		for _, l := range lines {
			sb.WriteString(prefix)
			sb.WriteString(strings.TrimRight(l, "\r\n"))
			sb.WriteByte('\n')
			if !strings.HasSuffix(l, "\n") {
				sb.WriteString("\\ No newline at end of file\n")
			}
		}
	}
	emit(" ", al[from:pre])
	emit("-", al[pre:aEnd])
	emit("+", bl[pre:bEnd])
	emit(" ", al[aEnd:aTo])
	return sb.String()
}

func hunkRange(from, to int) string {
	n := to - from
	start := from + 1
	if n == 0 {
		start = from
	}
	return fmt.Sprintf("%d,%d", start, n)
}

func splitLines(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, string(b))
			break
		}
		out = append(out, string(b[:i+1]))
		b = b[i+1:]
	}
	return out
}
