// Package remediate is the transaction that turns OCSP stapling off in the pre-VirtualHost
// include (Remediate) or back to the admin's setting (Revert): plan by reading only, refuse
// what cannot be right, journal the intent, write atomically, rebuild if the include is not
// wired, config-test, restart, verify, and restore the exact previous bytes on any failure.
// Assess answers, by reading only, the host facts the policy decides on, with the same plan
// and the same refusals a real run would apply.
package remediate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

// Remediator changes the include. Every change is config-tested and restarted, and restored
// byte for byte if either fails, so Apache is never left on a config nobody tested.
type Remediator struct {
	Layout   *apacheconf.Layout
	Cmds     apacheconf.Commands
	Runner   apacheconf.Runner
	State    *state.State
	Log      zerolog.Logger
	Out      io.Writer // the human report (stdout)
	LockWait time.Duration
	Now      func() time.Time
	// Force turns stapling off even for vhosts serving Must-Staple certificates (remediate
	// --force; the daemon never forces).
	Force bool
	// Verify, when set, handshakes with the local SSL vhosts before the change and after the
	// restart; a vhost that served before and fails after triggers the rollback.
	Verify probe.Handshaker
	// Affected names the vhosts whose responders failed (the daemon's decision): their
	// handshakes before the change, timed against the others', are the outage's impact in
	// the journal.
	Affected []string
}

// beforeBudget bounds the handshakes before a change: during an outage each one waits on
// mod_ssl's serialised staple fetch (the responder timeout, queued), and the fix must not wait
// on the outage it fixes. What has not finished by then is reported as stalled.
const beforeBudget = time.Second

// New builds the Remediator for e, writing its report for people to out.
func New(e *env.Env, out io.Writer) (*Remediator, error) {
	l, err := e.RequireLayout()
	if err != nil {
		return nil, &Error{Outcome: Refused, Err: err}
	}
	t := e.Config.Commands.Timeout
	return &Remediator{
		Layout: l,
		Cmds:   e.Commands(),
		Runner: e.Runner,
		State:  e.State,
		Log:    e.Log,
		Out:    out,
		// The longest another run holds the lock: rebuild, config test and two restarts.
		LockWait: 4*t + 30*time.Second,
		Now:      e.Now,
		Verify:   probe.TLSHandshaker{Timeout: 10 * time.Second},
	}, nil
}

// maxVerify bounds the handshakes a remediation makes: during an outage each may wait the
// responder timeout, and a cPanel host can have thousands of vhosts.
const maxVerify = 10

// Report says what a Remediate or Revert call saw and did.
type Report struct {
	Action   state.Action
	Changed  bool // the include's bytes changed
	Finished bool // an interrupted earlier run was completed
	Noop     bool
	Backup   string
	Before   apacheconf.IncludeState
	After    apacheconf.Stapling // effective stapling after the change
}

// Outcome is how a run that did not succeed ended.
type Outcome int

const (
	Failed  Outcome = iota + 1 // failed, and rolled back (the message says if the rollback failed too)
	Refused                    // refused before changing anything
)

// Error is a run that did not succeed. It wraps its cause, so errors.As still finds the
// command's *apacheconf.CmdError after a failed config test, and errors.Is finds
// context.DeadlineExceeded after a command timed out.
type Error struct {
	Outcome Outcome
	Err     error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// IsRefused reports whether err is a refusal: nothing was changed.
func IsRefused(err error) bool {
	var re *Error
	return errors.As(err, &re) && re.Outcome == Refused
}

func refused(format string, a ...any) error {
	return &Error{Outcome: Refused, Err: fmt.Errorf(format, a...)}
}

func failed(format string, a ...any) error {
	return &Error{Outcome: Failed, Err: fmt.Errorf(format, a...)}
}

// plan is everything a change needs, computed by reading only.
type plan struct {
	action  state.Action
	snap    *apacheconf.FileSnapshot
	before  apacheconf.IncludeState
	next    []byte
	changed bool
	wired   bool
	current *apacheconf.Config // the config as it reads now
	after   *apacheconf.Config // the config as it would read with next in place
	// mustStaple lists SSL vhosts that would lose stapling while serving a Must-Staple
	// certificate.
	mustStaple []string
	// disagreement is where Apache's own answers (Layout.Answers) contradict the reading of
	// current; "" when they agree or Apache was not asked.
	disagreement string
	layout       *apacheconf.Layout // the layout planned for: a plan is reused only for it
}

func (r *Remediator) plan(action state.Action) (*plan, error) {
	l := r.Layout
	dir := path.Dir(l.Include)
	if info, err := os.Stat(l.Path(dir)); err != nil || !info.IsDir() {
		return nil, refused("include directory %s does not exist; is this a cPanel host? (EA %s layout)", dir, l.Kind)
	}
	snap, err := apacheconf.Snapshot(l.Path(l.Include))
	if err != nil {
		return nil, &Error{Outcome: Refused, Err: err}
	}
	if bytes.IndexByte(snap.Data, 0) >= 0 {
		return nil, refused("%s contains NUL bytes; not an Apache config file, fix it by hand first", l.Include)
	}
	p := &plan{action: action, snap: snap, before: apacheconf.InspectInclude(snap.Data), layout: l}
	if action == state.Remediate {
		p.next, p.changed = apacheconf.ApplyBlock(snap.Data)
	} else {
		p.next, p.changed = apacheconf.RemoveBlock(snap.Data)
	}
	// The config as it is and as it would be with the change: two independent readings, side
	// by side (on a 3,000-account host each is a 20 MB walk).
	var afterErr error
	done := make(chan struct{})
	if p.changed {
		go func() {
			defer close(done)
			p.after, afterErr = apacheconf.ReadConfigWith(l, map[string][]byte{l.Include: p.next})
		}()
	} else {
		close(done)
	}
	p.current, err = apacheconf.ReadConfig(l)
	<-done
	if err == nil {
		err = afterErr
	}
	if err != nil {
		return nil, refused("read Apache config: %w", err)
	}
	if !p.changed {
		p.after = p.current
	}
	if l.Answers != nil {
		p.disagreement = p.current.Disagreement(l.Answers, l.ErrorLog)
	}
	p.wired = p.after.Includes(l.Root, l.Include)
	if action == state.Remediate && p.changed {
		p.mustStaple = losingMustStaple(l, p.current, p.after)
	}
	return p, nil
}

// losingMustStaple names the SSL vhosts whose stapling is on before and off after, and whose
// certificate is Must-Staple.
func losingMustStaple(l *apacheconf.Layout, before, after *apacheconf.Config) []string {
	var losing []apacheconf.VHost
	for i, v := range before.VHosts {
		if i < len(after.VHosts) && before.StaplingOf(v) && !after.StaplingOf(after.VHosts[i]) {
			losing = append(losing, v)
		}
	}
	var out []string
	for _, v := range probe.MustStapleVHosts(l, losing) {
		out = append(out, fmt.Sprintf("%s (%s:%d, %s)", v.Name(), v.File, v.Line, v.CertFile))
	}
	return out
}

// guard refuses changes that cannot be right whatever happens next.
func (r *Remediator) guard(p *plan) error {
	l := r.Layout
	switch {
	case p.disagreement != "":
		// Where Apache's own answers and the agent's reading differ, the model is wrong
		// somewhere: nothing may rest on it.
		return refused("Apache's own reading of its config differs from the agent's: %s", p.disagreement)
	case p.action == state.Remediate && !apacheconf.InspectInclude(p.next).StaplingOff:
		return refused("%s would not turn stapling off at global scope even with our block (an unclosed container in it?); fix the file by hand", l.Include)
	case p.action == state.Remediate && p.wired && noEffect(p.after) != nil:
		return &Error{Outcome: Refused, Err: fmt.Errorf("%s: %w", l.Include, noEffect(p.after))}
	case !p.wired && l.Kind == apacheconf.KindEA3:
		return refused("%s does not include %s; add `Include \"%s\"` before the VirtualHosts by hand (EA3 has no rebuildhttpdconf)", l.HTTPDConf, l.Include, l.Include)
	case len(p.mustStaple) > 0 && !r.Force:
		return refused("refusing to turn OCSP stapling off: %d SSL vhost(s) serve a Must-Staple certificate (TLS Feature status_request), which Firefox rejects without a staple: %s; reissue those certificates without Must-Staple, or pass --force",
			len(p.mustStaple), strings.Join(p.mustStaple, "; "))
	case p.action == state.Revert && p.changed && p.after.EffectiveStapling() != apacheconf.StaplingOff && p.after.StaplingCache == "":
		// mod_ssl refuses to start with stapling on and no cache (AH01958).
		return refused("reverting would turn stapling on, but no SSLStaplingCache is configured (Apache would not start: AH01958); configure one first")
	}
	return nil
}

// Assessment is what Assess read.
type Assessment struct {
	Facts policy.Facts
	// Config is Apache's config as it reads now; nil when it cannot be read (ConfigErr).
	Config    *apacheconf.Config
	ConfigErr error
	// Disagreement is what Apache's answers (Layout.Answers) and the agent's reading differ on.
	Disagreement string
	// Certs holds, for each responder key of Facts.Responders, a served certificate that names
	// it (with its issuer when the file has it): what a corroborating OCSP request asks about.
	Certs map[string]*probe.CertFile
	plan  *plan // the remediation planned while assessing, for RemediateAssessed
}

// Assess reads the host facts the policy decides on: effective stapling, whether the include
// is wired and already turns stapling off, and, through the same plan and guard a real
// remediation applies (without --force), whether a remediation would be refused and why. It
// only reads; the daemon and the audit both decide on it.
func Assess(l *apacheconf.Layout) Assessment {
	a := AssessPlanned(l)
	a.plan = nil // two readings of a big config: not kept where nothing will write
	return a
}

// AssessPlanned is Assess keeping the remediation's plan (the config as it is and as it
// would be), for RemediateAssessed: the daemon decides and writes on the same reading.
func AssessPlanned(l *apacheconf.Layout) Assessment {
	r := &Remediator{Layout: l}
	a := Assessment{Facts: policy.Facts{Include: l.Include, Effective: apacheconf.StaplingUnknown}}
	p, err := r.plan(state.Remediate)
	if err == nil {
		err = r.guard(p)
	}
	if err != nil {
		a.Facts.Refusal = err.Error()
	}
	if p != nil {
		a.plan = p
		a.Config, a.Facts.IncludeOff, a.Disagreement = p.current, p.before.StaplingOff, p.disagreement
	} else {
		a.Config, a.ConfigErr = apacheconf.ReadConfig(l)
		if inc, err := apacheconf.ReadFile(l.Path(l.Include), apacheconf.MaxConfigFile); err == nil {
			a.Facts.IncludeOff = apacheconf.InspectInclude(inc).StaplingOff
		}
	}
	if p == nil && a.Config != nil && l.Answers != nil {
		// No plan (the include cannot be changed): the reading is still checked.
		if d := a.Config.Disagreement(l.Answers, l.ErrorLog); d != "" {
			a.Disagreement = d
			a.Facts.Refusal = "Apache's own reading of its config differs from the agent's: " + d
		}
	}
	if a.Config != nil {
		a.Facts.Effective = a.Config.EffectiveStapling()
		a.Facts.Wired = a.Config.Includes(l.Root, l.Include)
		a.Facts.Overrides = OverrideList(a.Config)
		a.responders(l)
	}
	return a
}

// NoAccount stands for the owner of SSL vhosts that name no cPanel account.
const NoAccount = "(no account)"

// responders fills the served responders and the blast-radius facts: every SSL vhost's
// certificate is read for its OCSP URLs (only http:// ones: mod_ssl fetches over plain HTTP).
func (a *Assessment) responders(l *apacheconf.Layout) {
	a.Certs = map[string]*probe.CertFile{}
	byKey := map[string]*policy.Responder{}
	accounts := map[string]bool{}
	served := map[[2]string]bool{} // responder key and account: 3,000 accounts share one CA
	var keys []string
	for _, v := range a.Config.VHosts {
		if !v.SSL {
			continue
		}
		a.Facts.SSLVHosts++
		// A vhost no account owns (the server's own hostname vhost) counts as its own owner,
		// so "only one account is affected" never hides the server's vhosts.
		owner := v.Account
		if owner == "" {
			owner = NoAccount
		}
		if !accounts[owner] {
			accounts[owner] = true
			a.Facts.Accounts = append(a.Facts.Accounts, owner)
		}
		if v.CertFile == "" {
			continue
		}
		cf, err := probe.LoadCertFile(l.Path(v.CertFile))
		if err != nil {
			continue
		}
		for _, u := range cf.Leaf.OCSPServer {
			pu, err := url.Parse(u)
			if err != nil || pu.Scheme != "http" || pu.Host == "" {
				continue
			}
			k := policy.ResponderKey(pu.Host)
			r := byKey[k]
			if r == nil {
				r = &policy.Responder{URL: u, Key: k}
				byKey[k] = r
				keys = append(keys, k)
				a.Certs[k] = cf
			} else if a.Certs[k].Issuer == nil && cf.Issuer != nil {
				a.Certs[k] = cf
			}
			r.VHosts = append(r.VHosts, v.Name())
			if !served[[2]string{k, owner}] {
				served[[2]string{k, owner}] = true
				r.Accounts = append(r.Accounts, owner)
			}
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		a.Facts.Responders = append(a.Facts.Responders, *byKey[k])
	}
	sort.Strings(a.Facts.Accounts)
	if pu, err := url.Parse(a.Config.OCSPProxyURL); a.Config.OCSPProxyURL != "" && err == nil && pu.Host != "" {
		a.Facts.Proxy = policy.ResponderKey(pu.Host)
	}
}

// ErrorLog is where and how Apache really writes its main error log: the config's global
// ErrorLog (the layout's default when the config sets none or cannot be read), and its
// ErrorLogFormat (nil for Apache's default). A format the agent cannot read failures from,
// or an SSL vhost logging in a format of its own, is an error naming the directive: the
// agent would read nothing there, and must say so rather than report "no failures".
func (a *Assessment) ErrorLog(l *apacheconf.Layout) (string, *logwatch.Format, error) {
	if a.Config == nil {
		return l.ErrorLog, nil, nil
	}
	c := a.Config
	var f *logwatch.Format
	if c.ErrorLogFormat != "" {
		var err error
		if f, err = logwatch.ParseFormat(c.ErrorLogFormat); err != nil {
			return "", nil, fmt.Errorf("the ErrorLogFormat at %s:%d cannot be read for stapling failures: %w", c.ErrorLogFormatAt.File, c.ErrorLogFormatAt.Line, err)
		}
	}
	for _, d := range c.VHostFormats {
		// mod_ssl logs a vhost's stapling failures in the vhost's format; only SSL vhosts log
		// them at all.
		if len(d.Args) != 1 || d.Args[0] == c.ErrorLogFormat || !sslVHostAt(c, *d.VHost) {
			continue
		}
		return "", nil, fmt.Errorf("the SSL vhost at %s:%d sets its own ErrorLogFormat at %s:%d: its stapling failures are written in another format than the main server's, which the agent reads; set it once, globally",
			d.VHost.File, d.VHost.Line, d.File, d.Line)
	}
	path, err := c.ErrorLogFile(l.ErrorLog)
	return path, f, err
}

func sslVHostAt(c *apacheconf.Config, at apacheconf.Location) bool {
	for _, v := range c.VHosts {
		if v.Location == at {
			return v.SSL
		}
	}
	return false
}

// Asker asks one responder from this host (probe.Check in production; tests replace it).
type Asker func(ctx context.Context, rawURL string, cf *probe.CertFile, timeout time.Duration, proxy string) probe.ResponderCheck

// AskFromHere is the real Asker: the system resolver, every address on its own.
func AskFromHere(ctx context.Context, rawURL string, cf *probe.CertFile, timeout time.Duration, proxy string) probe.ResponderCheck {
	return probe.Check(ctx, net.DefaultResolver, rawURL, cf, timeout, proxy)
}

// ResponderTimeout is mod_ssl's SSLStaplingResponderTimeout for this config (Apache's
// default, 10 s, when unset): the time each corroborating request gets, per address.
func (a *Assessment) ResponderTimeout() time.Duration {
	if a.Config != nil && a.Config.ResponderTimeout > 0 {
		return time.Duration(a.Config.ResponderTimeout) * time.Second
	}
	return 10 * time.Second
}

// Decide is policy.Decide on these facts; when it asks for corroboration, the responders it
// names are asked (concurrently) and it decides again with their answers. The daemon and the
// audit both decide through here.
func (a *Assessment) Decide(ctx context.Context, in policy.Input, ask Asker) policy.Decision {
	in.Facts = a.Facts
	d := policy.Decide(in)
	if d.Kind != policy.Corroborate {
		return d
	}
	proxy := ""
	if a.Config != nil {
		proxy = a.Config.OCSPProxyURL
	}
	check := &policy.Check{Responders: make([]policy.CheckResult, len(d.Check))}
	var wg sync.WaitGroup
	for i, r := range d.Check {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ask(ctx, r.URL, a.Certs[r.Key], a.ResponderTimeout(), proxy)
			check.Responders[i] = policy.CheckResult{Key: r.Key, URL: r.URL, Answers: c.Answers, Detail: c.Detail()}
		}()
	}
	wg.Wait()
	in.Check = check
	d = policy.Decide(in)
	d.Checked = check
	return d
}

// Remediate turns stapling off. See the README for the steps; in short: lock, plan, journal
// the intent, write atomically, (rebuild if the include is not wired), config test, restart,
// journal done; any failure restores the previous bytes.
func (r *Remediator) Remediate(ctx context.Context, dryRun bool) (*Report, error) {
	return r.change(ctx, state.Remediate, dryRun, nil)
}

// RemediateAssessed is Remediate starting from the plan a made (Assess plans the remediation
// to judge it): the daemon decides on a current assessment, and reading a 3,000-account
// config twice more between the decision and the write would make detection-to-write grow
// with the vhost count. The plan is used only for this remediator's layout and while the
// include still holds the bytes it was planned from (the caller keeps a current by the state
// of every file it was read from); every check runs again on it, and the write compares the
// bytes once more before it replaces anything.
func (r *Remediator) RemediateAssessed(ctx context.Context, a *Assessment) (*Report, error) {
	var p *plan
	if a != nil && a.plan != nil && a.plan.layout == r.Layout && a.plan.action == state.Remediate && a.plan.snap.Unchanged() {
		p = a.plan
	}
	return r.change(ctx, state.Remediate, false, p)
}

// Revert removes exactly our managed block, with the same safety rules.
func (r *Remediator) Revert(ctx context.Context, dryRun bool) (*Report, error) {
	return r.change(ctx, state.Revert, dryRun, nil)
}

func (r *Remediator) change(ctx context.Context, action state.Action, dryRun bool, pre *plan) (*Report, error) {
	if dryRun {
		return r.dryRun(action)
	}
	// Everything below may run a command as root: none may be one another user could replace.
	if err := r.Cmds.Trusted(r.Layout.Root); err != nil {
		return nil, &Error{Outcome: Refused, Err: err}
	}
	// Refuse bad input before creating or locking anything: a refusal changes nothing on
	// disk, our state directory included. The same checks run again under the lock.
	if pre == nil {
		var err error
		if pre, err = r.plan(action); err != nil {
			return nil, err
		}
	}
	if err := r.guard(pre); err != nil {
		return nil, err
	}
	if err := r.State.Ensure(); err != nil {
		return nil, &Error{Outcome: Failed, Err: err}
	}
	unlock, err := r.State.Lock(ctx, r.LockWait)
	if err != nil {
		return nil, &Error{Outcome: Failed, Err: err}
	}
	defer unlock()

	if removed, err := apacheconf.CleanTemps(r.Layout.Path(r.Layout.Include)); err != nil {
		r.Log.Warn().Err(err).Msg("could not remove stale temp files")
	} else if len(removed) > 0 {
		r.Log.Info().Strs("files", removed).Msg("removed temp files left by an interrupted run")
	}
	unfinished, err := r.State.Unfinished(r.Layout.Include)
	if err != nil {
		return nil, &Error{Outcome: Failed, Err: err}
	}
	// An admin may save the include between our read and our write; the write then fails
	// with ErrChanged and we plan again from the new bytes.
	for attempt := 1; ; attempt++ {
		// The first attempt reuses the pre-check's plan while the include still holds the bytes
		// it planned from (reading a 3,000-account config twice more would double the wait);
		// the write compares them once more before it replaces anything.
		var p *plan
		if attempt == 1 && unfinished == nil && pre.snap.Unchanged() {
			p = pre
		}
		rep, err := r.attempt(ctx, action, unfinished, p)
		if !errors.Is(err, apacheconf.ErrChanged) || attempt == 3 {
			return rep, err
		}
		r.Log.Warn().Err(err).Msg("the include changed while we were writing it; planning again")
	}
}

func (r *Remediator) attempt(ctx context.Context, action state.Action, unfinished *state.Entry, p *plan) (*Report, error) {
	var err error
	if p == nil {
		if p, err = r.plan(action); err != nil {
			r.journal(action, state.Refused, err, "")
			return nil, err
		}
	}
	rep := &Report{Action: action, Changed: p.changed, Before: p.before, After: p.after.EffectiveStapling()}
	if err := r.guard(p); err != nil {
		r.journal(action, state.Refused, err, "")
		return nil, err
	}
	if !p.changed && p.wired && unfinished == nil {
		rep.Noop = true
		r.say("%s: nothing to do: %s", action, r.noopReason(p))
		return rep, nil
	}
	var before []probe.Handshake
	if r.Verify != nil {
		bctx, cancel := context.WithTimeout(ctx, beforeBudget)
		before = r.handshakes(bctx, p)
		cancel()
	}
	if unfinished != nil {
		rep.Finished = true
		r.say("%s: finishing an interrupted %s (last step %q at %s)", action, unfinished.Action, unfinished.Step, unfinished.Time.Format(time.RFC3339))
	}

	if p.changed {
		if p.snap.Exists {
			if rep.Backup, err = r.State.Backup(path.Base(r.Layout.Include), p.snap.Data); err != nil {
				return nil, &Error{Outcome: Failed, Err: err}
			}
		}
		// The intent goes to the journal before the file changes: a run killed after the
		// rename but before the restart is finished by the next run.
		if err := r.State.Append(r.entry(action, state.Intent, nil, rep.Backup)); err != nil {
			return nil, &Error{Outcome: Failed, Err: err}
		}
		if err := p.snap.WriteAtomic(p.next); err != nil {
			if errors.Is(err, apacheconf.ErrChanged) {
				r.journal(action, state.Noop, err, "")
				return nil, &Error{Outcome: Failed, Err: err}
			}
			r.journal(action, state.Failed, err, "")
			return nil, failed("write %s: %w (file unchanged)", r.Layout.Include, err)
		}
		r.journal(action, state.Written, nil, rep.Backup)
		r.say("%s: wrote %s (%s)", action, r.Layout.Include, r.changeWords(action, rep.Backup))
	} else if unfinished == nil {
		// Unchanged content but not wired: the rebuild below is the whole change.
		if err := r.State.Append(r.entry(action, state.Intent, nil, "")); err != nil {
			return nil, &Error{Outcome: Failed, Err: err}
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
	if before != nil {
		after := r.handshakes(ctx, p)
		var broken []string
		detail = "handshakes before/after:"
		for i, b := range before {
			a := after[i]
			detail += fmt.Sprintf(" %s %s/%s", b.Name, b.Show(), a.Show())
			if b.Err == nil && a.Err != nil {
				broken = append(broken, fmt.Sprintf("%s (%v)", b.Name, a.Err))
			}
			if action == state.Remediate && a.Err == nil && a.Stapled {
				r.say("%s: note: %s still sends a staple: it turns stapling on itself", action, b.Name)
			}
		}
		if impact := impact(before, r.Affected); impact != "" {
			detail += "; " + impact
		}
		r.say("%s: %s", action, detail)
		if len(broken) > 0 {
			return nil, r.rollback(ctx, p, action, Failed, true,
				fmt.Errorf("verification failed: served before, fail after the restart: %s", strings.Join(broken, ", ")))
		}
	}
	done := r.entry(action, state.Done, nil, rep.Backup)
	done.Detail = detail
	r.record(done, nil)
	rep.After = p.after.EffectiveStapling() // after a rebuild, what Apache reads now
	r.say("%s: done: effective OCSP stapling is now %s", action, rep.After)
	if rep.After == apacheconf.StaplingMixed {
		r.say("%s: warning: some SSL vhosts still turn stapling on themselves: %s", action, OverrideList(p.after))
	}
	return rep, nil
}

func (r *Remediator) noopReason(p *plan) string {
	if p.action == state.Revert {
		return fmt.Sprintf("no stapling-agent block in %s", r.Layout.Include)
	}
	who := "by an admin's own SSLUseStapling off"
	if p.before.ManagedBlock {
		who = "by the stapling-agent block"
	}
	return fmt.Sprintf("OCSP stapling is already off at global scope in %s (%s); effective stapling: %s", r.Layout.Include, who, p.after.EffectiveStapling())
}

func (r *Remediator) changeWords(action state.Action, backup string) string {
	words := "added the managed block"
	if action == state.Revert {
		words = "removed the managed block"
	}
	if backup != "" {
		words += "; previous bytes saved to " + backup
	}
	return words
}

// rebuild regenerates httpd.conf on EA4: cPanel writes the Include line for the
// pre-VirtualHost include only if the file existed at the last rebuild (ea4_main.default).
func (r *Remediator) rebuild(ctx context.Context, p *plan, action state.Action) error {
	l := r.Layout
	if len(r.Cmds.Rebuild) == 0 {
		return r.rollback(ctx, p, action, Refused, false,
			fmt.Errorf("%s does not include %s and no rebuild command is configured", l.HTTPDConf, l.Include))
	}
	r.say("%s: %s does not include %s; running %s", action, l.HTTPDConf, l.Include, strings.Join(r.Cmds.Rebuild, " "))
	if _, err := r.Runner.Run(ctx, r.Cmds.Rebuild); err != nil {
		return r.rollback(ctx, p, action, Failed, false, fmt.Errorf("rebuild failed: %w", err))
	}
	cfg, err := apacheconf.ReadConfig(l)
	if err != nil {
		return r.rollback(ctx, p, action, Failed, false, fmt.Errorf("read Apache config after rebuild: %w", err))
	}
	if !cfg.Includes(l.Root, l.Include) {
		return r.rollback(ctx, p, action, Refused, false,
			fmt.Errorf("%s still does not include %s after %s; wire it in by hand",
				l.HTTPDConf, l.Include, strings.Join(r.Cmds.Rebuild, " ")))
	}
	p.wired = true
	if action == state.Remediate {
		if err := noEffect(cfg); err != nil {
			return r.rollback(ctx, p, action, Refused, false, err)
		}
	}
	p.after = cfg // what Apache reads now that the include is wired
	r.journal(action, state.Rebuilt, nil, "")
	return nil
}

// noEffect says why, with our block in place and read, stapling would stay on at global
// scope: a global `SSLUseStapling On` read after it (post_virtualhost_global.conf, a
// version-specific _2.conf include, an admin's conf.d file) wins, as the last global one does.
// A restart would then change nothing, so the change is refused before anything is written.
//
// Every global On read after the last global Off is named: removing only the last one would
// let the one before it win, and the next attempt would be refused again.
func noEffect(after *apacheconf.Config) error {
	if after.Global != "on" {
		return nil
	}
	var ons []string
	for _, d := range after.Trace {
		if d.VHost != nil || !strings.EqualFold(d.Name, "SSLUseStapling") || len(d.Args) != 1 {
			continue
		}
		switch strings.ToLower(d.Args[0]) {
		case "off":
			ons = ons[:0]
		case "on":
			ons = append(ons, fmt.Sprintf("%s:%d", d.File, d.Line))
		}
	}
	if len(ons) == 0 { // cannot happen while Global is on; name the winner anyway
		ons = append(ons, fmt.Sprintf("%s:%d", after.GlobalAt.File, after.GlobalAt.Line))
	}
	what := "`SSLUseStapling On` at " + ons[0] + " is read after it and wins (the last global one does); remove that line, or set it to off"
	if len(ons) > 1 {
		what = fmt.Sprintf("%d global `SSLUseStapling On` lines are read after it (%s), and the last global one wins; remove them, or set them to off",
			len(ons), strings.Join(ons, ", "))
	}
	return fmt.Errorf("turning stapling off there would have no effect: %s", what)
}

func (r *Remediator) testAndRestart(ctx context.Context, p *plan, action state.Action) error {
	if _, err := r.Runner.Run(ctx, r.Cmds.ConfigTest); err != nil {
		return r.rollback(ctx, p, action, Failed, false, fmt.Errorf("config test failed: %w", err))
	}
	r.say("%s: config test passed: %s", action, strings.Join(r.Cmds.ConfigTest, " "))
	if _, err := r.Runner.Run(ctx, r.Cmds.Restart); err != nil {
		return r.rollback(ctx, p, action, Failed, true, fmt.Errorf("restart failed: %w", err))
	}
	r.say("%s: Apache restarted: %s", action, strings.Join(r.Cmds.Restart, " "))
	return nil
}

// rollback restores the include's previous bytes and, if a restart had been attempted, runs
// the restart once more so Apache comes back on the old config. The returned error wraps
// cause.
func (r *Remediator) rollback(ctx context.Context, p *plan, action state.Action, outcome Outcome, restarted bool, cause error) error {
	l := r.Layout
	if !p.changed {
		r.journal(action, state.Failed, cause, "")
		return &Error{Outcome: Failed, Err: fmt.Errorf("%s: %w (the include was not changed by this run)", action, cause)}
	}
	if err := p.snap.Restore(); err != nil {
		r.journal(action, state.Failed, fmt.Errorf("%w; restore failed: %v", cause, err), "")
		return failed("%s: %w; AND restoring %s failed: %v; restore it from %s", action, cause, l.Include, err, r.State.Dir+"/backups")
	}
	if restarted {
		if _, err := r.Runner.Run(ctx, r.Cmds.Restart); err != nil {
			r.journal(action, state.Failed, fmt.Errorf("%w; restart on the old config failed: %v", cause, err), "")
			return failed("%s: %w; restored %s byte for byte; restarting Apache on the old config ALSO failed, Apache may be down: %v", action, cause, l.Include, err)
		}
	}
	step := state.RolledBack
	if outcome == Refused {
		step = state.Refused
	}
	r.journal(action, step, cause, "")
	if restarted {
		return &Error{Outcome: outcome, Err: fmt.Errorf("%s: %w; restored %s byte for byte and restarted Apache on it", action, cause, l.Include)}
	}
	return &Error{Outcome: outcome, Err: fmt.Errorf("%s: %w; restored %s byte for byte", action, cause, l.Include)}
}

func (r *Remediator) dryRun(action state.Action) (*Report, error) {
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

// handshakes verifies up to maxVerify local SSL vhosts of the config as it will be.
func (r *Remediator) handshakes(ctx context.Context, p *plan) []probe.Handshake {
	return probe.Handshakes(ctx, r.Verify, probe.Targets(r.Layout, p.after, maxVerify))
}

func (r *Remediator) entry(action state.Action, step state.Step, err error, backup string) state.Entry {
	e := state.Entry{Time: r.Now(), Run: runID, Action: action, Step: step, File: r.Layout.Include, Result: state.OK, Backup: backup}
	if err != nil {
		e.Result, e.Error = state.Error, err.Error()
	}
	return e
}

// journal records a step; a journal that cannot be written is logged, not fatal, once the
// intent is safely recorded.
func (r *Remediator) journal(action state.Action, step state.Step, err error, backup string) {
	r.record(r.entry(action, step, err, backup), err)
}

func (r *Remediator) record(e state.Entry, err error) {
	if jerr := r.State.Append(e); jerr != nil {
		r.Log.Error().Err(jerr).Str("step", string(e.Step)).Msg("could not write journal")
	}
	ev := r.Log.Info()
	if err != nil {
		ev = r.Log.Error().Err(err)
	}
	if e.Detail != "" {
		ev = ev.Str("detail", e.Detail)
	}
	ev.Str("action", string(e.Action)).Str("step", string(e.Step)).Str("file", e.File).Msg("remediation step")
}

func (r *Remediator) say(format string, a ...any) {
	fmt.Fprintf(r.Out, format+"\n", a...)
}

// impact compares the handshakes before the change on the affected vhosts with the others':
// a stall of about the responder timeout on the affected ones is the incident clients feel; a
// fast failure costs them little (README: how the impact weighs).
func impact(before []probe.Handshake, affected []string) string {
	if len(affected) == 0 || len(before) == 0 {
		return ""
	}
	aff := map[string]bool{}
	for _, v := range affected {
		aff[v] = true
	}
	var a, u []string
	for _, h := range before {
		if aff[h.Name] {
			a = append(a, h.Show())
		} else {
			u = append(u, h.Show())
		}
	}
	if len(u) == 0 {
		u = []string{"none"}
	}
	return fmt.Sprintf("impact: affected vhosts %s, unaffected %s", strings.Join(a, " "), strings.Join(u, " "))
}

// OverrideList names the SSL vhosts that turn stapling on themselves, with where they do.
func OverrideList(c *apacheconf.Config) string {
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
