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
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/config"
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
	// Force turns stapling off even for vhosts serving Must-Staple certificates that are not
	// exempted (remediate --force; the daemon never forces). In exempt mode the vhosts that can
	// be exempted still are: Force only overrides the refusal for the others.
	Force bool
	// MustStaple is policy.must_staple: exempt (also when empty, the default) keeps stapling on
	// for Must-Staple vhosts through a per-vhost include written in the same transaction; veto
	// refuses the whole remediation while one would lose its staple.
	MustStaple config.MustStaple
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
		LockWait:   4*t + 30*time.Second,
		Now:        e.Now,
		Verify:     probe.TLSHandshaker{Timeout: 10 * time.Second},
		MustStaple: e.Config.Policy.MustStaple,
	}, nil
}

// maxVerify bounds the handshakes a remediation makes: during an outage each may wait the
// responder timeout, and a cPanel host can have thousands of vhosts.
const maxVerify = 10

// Report says what a Remediate or Revert call saw and did.
type Report struct {
	Action   state.Action
	Changed  bool // a file of the transaction changed (the include, an exemption file)
	Finished bool // an interrupted earlier run was completed
	Noop     bool
	Backup   string
	Before   apacheconf.IncludeState
	After    apacheconf.Stapling // effective stapling after the change
	// Exempted names the Must-Staple vhosts this remediation kept stapling on for, each with
	// its exemption file; Removed the exemption files a revert removed.
	Exempted []string
	Removed  []string
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
	action state.Action
	mode   config.MustStaple
	snap   *apacheconf.FileSnapshot
	before apacheconf.IncludeState
	next   []byte
	// incChanged: the include's bytes change; changed: any file of the transaction changes
	// (the include, or an exemption file written or removed).
	incChanged bool
	changed    bool
	wired      bool
	current    *apacheconf.Config // the config as it reads now
	after      *apacheconf.Config // the config as it would read with every file of the change in place
	// mustStaple lists SSL vhosts that would lose stapling while serving a Must-Staple
	// certificate: in veto mode each one refuses the change.
	mustStaple []string
	// exempt are the per-vhost exemption files of the transaction: for a remediation the
	// files that keep stapling on for the Must-Staple vhosts (written, or already there with
	// our exact bytes), for a revert the files of ours it removes.
	exempt []*fileChange
	// exemptWired: every vhost of exempt reads its file now; otherwise cPanel has the
	// userdata Include line commented out (the directory did not exist at the last rebuild)
	// and rebuildhttpdconf must wire it, as for the include.
	exemptWired bool
	// unexempt are Must-Staple vhosts that would lose stapling and cannot be exempted, each
	// with why: in exempt mode each one refuses the change.
	unexempt []string
	// alsoOn are vhosts an exemption file keeps stapling on for besides the Must-Staple ones
	// (they read the same userdata directory); leftAlone are files with our name that do not
	// hold our exact bytes, which a revert leaves.
	alsoOn    []string
	leftAlone []string
	// disagreement is where Apache's own answers (Layout.Answers) contradict the reading of
	// current; "" when they agree or Apache was not asked.
	disagreement string
	layout       *apacheconf.Layout // the layout planned for: a plan is reused only for it

	// Set while the transaction runs: the snapshots written so far (restored in reverse on
	// rollback), and httpd.conf as it was before a rebuild (nil when none ran). A rollback
	// after a rebuild puts httpd.conf back too: the rebuilt one may name a userdata directory
	// the rollback removes, and Apache's Include fails on a directory (or a `*.conf` glob)
	// with nothing in it, so the old config would not even pass the config test.
	written   []*apacheconf.FileSnapshot
	rebuilt   bool
	httpdSnap *apacheconf.FileSnapshot
}

// fileChange is one exemption file of a transaction.
type fileChange struct {
	host   string // host path
	snap   *apacheconf.FileSnapshot
	write  bool  // the file changes (created, or removed by a revert)
	remove bool  // revert: the file goes
	vhosts []int // remediation: indexes in plan.current.VHosts of the vhosts it exempts
	names  []string
	// created are the directories this run made for the file, parents first.
	created []string
	// rmdir: a revert removes the file's directory too, which the file leaves empty: cPanel
	// writes the vhost's `Include ".../*.conf"` for an existing directory, and Apache fails
	// on a wildcard that matches nothing ("No matches for the wildcard"), so the directory
	// goes and rebuildhttpdconf turns the line back into a comment. removedDir is set once
	// it is gone.
	rmdir      bool
	removedDir bool
	// lastConf: no other *.conf is left in the directory, so the vhost's glob would match
	// nothing even where the directory stays (an admin's README in it): rebuildhttpdconf,
	// which writes the line only when a *.conf matches, must run.
	lastConf bool
}

// files are the host paths of the transaction in write order. A remediation writes the
// exemption files before the include and a revert removes them after it, so that at every
// point between two writes (a crash) no Must-Staple vhost reads stapling off: finishing the
// transaction forward, as the next run does, is always safe.
func (p *plan) files() []string {
	var ex []string
	for _, f := range p.exempt {
		if f.write {
			ex = append(ex, f.host)
		}
	}
	inc := []string{p.layout.Include}
	if !p.incChanged {
		inc = nil
	}
	if p.action == state.Revert {
		return append(inc, ex...)
	}
	return append(ex, inc...)
}

// mode is policy.must_staple, exempt when unset.
func (r *Remediator) mode() config.MustStaple {
	if r.MustStaple == config.MustStapleVeto {
		return config.MustStapleVeto
	}
	return config.MustStapleExempt
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
	p := &plan{action: action, mode: r.mode(), snap: snap, before: apacheconf.InspectInclude(snap.Data), layout: l, exemptWired: true}
	if action == state.Remediate {
		p.next, p.incChanged = apacheconf.ApplyBlock(snap.Data)
	} else {
		p.next, p.incChanged = apacheconf.RemoveBlock(snap.Data)
	}
	override := map[string][]byte{l.Include: p.next}
	if action == state.Revert {
		// Our exemption files go with our block: found where cPanel keeps userdata, read
		// as they will be (absent: an empty file reads the same).
		found, err := apacheconf.ExemptFiles(l, nil)
		if err != nil {
			return nil, refused("look for exemption files: %w", err)
		}
		for _, h := range found {
			if err := p.addRemoval(l, h, override); err != nil {
				return nil, err
			}
		}
	}
	p.changed = p.incChanged || len(p.exempt) > 0
	// The config as it is and as it would be with the change: two independent readings, side
	// by side (on a 3,000-account host each is a 20 MB walk).
	var afterErr error
	done := make(chan struct{})
	if p.changed {
		go func() {
			defer close(done)
			p.after, afterErr = apacheconf.ReadConfigWith(l, override)
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
	if action == state.Revert {
		// An exemption file outside the userdata tree, reached by a vhost's own include.
		extra, _ := apacheconf.ExemptFiles(l, p.current)
		n := len(p.exempt) + len(p.leftAlone)
		for _, h := range extra {
			if _, ok := override[h]; !ok && !slices.Contains(p.leftAlone, h) {
				if err := p.addRemoval(l, h, override); err != nil {
					return nil, err
				}
			}
		}
		if len(p.exempt)+len(p.leftAlone) != n {
			p.changed = p.incChanged || len(p.exempt) > 0
			if p.changed {
				if p.after, err = apacheconf.ReadConfigWith(l, override); err != nil {
					return nil, refused("read Apache config: %w", err)
				}
			}
		}
	}
	if !p.changed {
		p.after = p.current
	}
	for _, f := range p.exempt {
		if (f.rmdir || f.lastConf) && namedByInclude(l, p.current, path.Dir(f.host)) {
			p.exemptWired = false // httpd.conf must be rebuilt without the line
		}
	}
	if l.Answers != nil {
		p.disagreement = p.current.Disagreement(l.Answers, l.ErrorLog)
	}
	if action == state.Remediate && p.incChanged {
		losing := losingMustStaple(l, p.current, p.after)
		if p.mode == config.MustStapleVeto {
			for _, i := range losing {
				p.mustStaple = append(p.mustStaple, describe(p.current.VHosts[i]))
			}
		} else if len(losing) > 0 {
			if err := p.planExemptions(l, losing, override); err != nil {
				return nil, err
			}
		}
	}
	p.wired = p.after.Includes(l.Root, l.Include)
	return p, nil
}

// addRemoval plans a revert's removal of the exemption file h: only when it holds exactly our
// bytes (an admin's edit is left, and said).
func (p *plan) addRemoval(l *apacheconf.Layout, h string, override map[string][]byte) error {
	s, err := apacheconf.Snapshot(l.Path(h))
	if err != nil {
		return &Error{Outcome: Refused, Err: err}
	}
	if !s.Exists {
		return nil
	}
	if !apacheconf.IsExemptContent(s.Data) {
		p.leftAlone = append(p.leftAlone, h)
		return nil
	}
	fc := &fileChange{host: h, snap: s, write: true, remove: true}
	if entries, err := os.ReadDir(l.Path(path.Dir(h))); err == nil {
		fc.rmdir, fc.lastConf = len(entries) == 1, true
		for _, e := range entries {
			if n := e.Name(); n != path.Base(h) && strings.HasSuffix(n, ".conf") && !strings.HasPrefix(n, ".") {
				fc.lastConf = false
			}
		}
	}
	p.exempt = append(p.exempt, fc)
	override[h] = []byte{}
	return nil
}

// namedByInclude reports whether a vhost's `Include` (not IncludeOptional) line in c reads
// the directory dir through a glob: with the directory gone the line must go too, and only
// rebuildhttpdconf rewrites it.
func namedByInclude(l *apacheconf.Layout, c *apacheconf.Config, dir string) bool {
	for _, d := range c.Trace {
		if d.VHost == nil || len(d.Args) == 0 || !strings.EqualFold(d.Name, "Include") {
			continue
		}
		pat := d.Args[0]
		if !path.IsAbs(pat) {
			pat = path.Join(l.ServerRoot, pat)
		}
		if path.Dir(path.Clean(pat)) == dir {
			return true
		}
	}
	return false
}

func describe(v apacheconf.VHost) string {
	return fmt.Sprintf("%s (%s:%d, %s)", v.Name(), v.File, v.Line, v.CertFile)
}

// planExemptions plans a per-vhost exemption file for each losing vhost (indexes into
// p.current.VHosts), reads the config with all of them and the include in place, and checks
// that exactly those vhosts keep stapling on through our files. A vhost that cannot be
// exempted goes to p.unexempt with the reason; a file its vhost does not read yet (cPanel's
// Include line commented out) clears p.exemptWired: rebuildhttpdconf wires it, then the
// reading is checked again.
func (p *plan) planExemptions(l *apacheconf.Layout, losing []int, override map[string][]byte) error {
	byPath := map[string]*fileChange{}
	for _, i := range losing {
		v := p.current.VHosts[i]
		h, _, err := apacheconf.ExemptPath(l, p.current, v)
		if err != nil {
			p.unexempt = append(p.unexempt, fmt.Sprintf("%s: %v", describe(v), err))
			continue
		}
		fc := byPath[h]
		if fc == nil {
			s, err := apacheconf.Snapshot(l.Path(h))
			if err == nil {
				err = apacheconf.NoSymlinkBelow(l.Root, l.Path(path.Dir(h)))
			}
			if err != nil {
				p.unexempt = append(p.unexempt, fmt.Sprintf("%s: %v", describe(v), err))
				continue
			}
			if s.Exists && !apacheconf.IsExemptContent(s.Data) {
				p.unexempt = append(p.unexempt, fmt.Sprintf("%s: %s exists and is not stapling-agent's (edited by hand?); remove it or put `SSLUseStapling on` in it yourself", describe(v), h))
				continue
			}
			// Our exact bytes already there (a crash before the rebuild): only the wiring
			// is missing.
			fc = &fileChange{host: h, snap: s, write: !s.Exists}
			byPath[h] = fc
			p.exempt = append(p.exempt, fc)
			override[h] = apacheconf.ExemptContent()
		}
		fc.vhosts = append(fc.vhosts, i)
		fc.names = append(fc.names, v.Name())
	}
	if len(p.exempt) == 0 {
		return nil
	}
	after, err := apacheconf.ReadConfigWith(l, override)
	if err != nil {
		return refused("read Apache config: %w", err)
	}
	if len(after.VHosts) != len(p.current.VHosts) {
		return refused("the config with the exemption files reads %d vhosts, not %d; fix the userdata includes by hand", len(after.VHosts), len(p.current.VHosts))
	}
	planned := map[int]bool{}
	var keep []*fileChange
	for _, fc := range p.exempt {
		read := slices.Contains(after.Files, fc.host)
		var ok []int
		var names []string
		for k, i := range fc.vhosts {
			v := after.VHosts[i]
			switch {
			case after.StaplingOf(v) && v.StaplingAt.File == fc.host:
				ok, names = append(ok, i), append(names, fc.names[k])
			case read && v.Stapling != "":
				p.unexempt = append(p.unexempt, fmt.Sprintf("%s: `SSLUseStapling %s` at %s:%d is read after %s and wins", describe(p.current.VHosts[i]), v.Stapling, v.StaplingAt.File, v.StaplingAt.Line, fc.host))
			case l.Kind == apacheconf.KindEA3 || read:
				p.unexempt = append(p.unexempt, fmt.Sprintf("%s: it does not read %s", describe(p.current.VHosts[i]), fc.host))
			default:
				// Not read at all: cPanel's Include line for the directory is commented
				// out until a rebuild finds the directory.
				p.exemptWired = false
				ok, names = append(ok, i), append(names, fc.names[k])
			}
		}
		if len(ok) == 0 {
			delete(override, fc.host)
			continue
		}
		fc.vhosts, fc.names = ok, names
		for _, i := range ok {
			planned[i] = true
		}
		keep = append(keep, fc)
	}
	p.exempt = keep
	if len(keep) != len(byPath) {
		// A file was dropped: read once more without it, so after is exactly what is written.
		if after, err = apacheconf.ReadConfigWith(l, override); err != nil {
			return refused("read Apache config: %w", err)
		}
	}
	// Anything else our files keep on: a second vhost reading the same directory.
	for i, v := range after.VHosts {
		if !planned[i] && v.SSL && after.StaplingOf(v) && path.Base(v.StaplingAt.File) == apacheconf.ExemptFileName && !p.after.StaplingOf(p.after.VHosts[i]) {
			p.alsoOn = append(p.alsoOn, v.Name())
		}
	}
	p.after = after
	p.changed = p.incChanged || anyWrite(p.exempt)
	return nil
}

func anyWrite(fs []*fileChange) bool {
	for _, f := range fs {
		if f.write {
			return true
		}
	}
	return false
}

// losingMustStaple are the indexes of the SSL vhosts whose stapling is on before and off
// after, and whose certificate is Must-Staple.
func losingMustStaple(l *apacheconf.Layout, before, after *apacheconf.Config) []int {
	var losing []apacheconf.VHost
	var idx []int
	for i, v := range before.VHosts {
		if i < len(after.VHosts) && before.StaplingOf(v) && !after.StaplingOf(after.VHosts[i]) {
			losing = append(losing, v)
			idx = append(idx, i)
		}
	}
	ms := probe.MustStapleVHosts(l, losing)
	var out []int
	for k, v := range losing {
		for _, m := range ms {
			if m.Location == v.Location {
				out = append(out, idx[k])
				break
			}
		}
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
	case len(p.unexempt) > 0 && !r.Force:
		return refused("refusing to turn OCSP stapling off: %d SSL vhost(s) serve a Must-Staple certificate (TLS Feature status_request), which Firefox rejects without a staple, and cannot keep stapling on through a per-vhost include: %s; reissue those certificates without Must-Staple, or pass --force",
			len(p.unexempt), strings.Join(p.unexempt, "; "))
	case p.action == state.Revert && p.changed && p.after.EffectiveStapling() != apacheconf.StaplingOff && p.after.StaplingCache == "":
		// mod_ssl refuses to start with stapling on and no cache (AH01958).
		return refused("reverting would turn stapling on, but no SSLStaplingCache is configured (Apache would not start: AH01958); configure one first")
	}
	return nil
}

// exempted names the vhosts the plan keeps stapling on for, with their files.
func (p *plan) exempted() []string {
	var out []string
	for _, f := range p.exempt {
		if !f.remove {
			out = append(out, fmt.Sprintf("%s (%s)", strings.Join(f.names, ", "), f.host))
		}
	}
	return out
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
	// MustStaple is the policy.must_staple mode assessed for; Exempt names the Must-Staple
	// vhosts a remediation would keep stapling on for in exempt mode, each with its per-vhost
	// include (the same plan a real run makes, so the audit and the daemon say the same).
	MustStaple config.MustStaple
	Exempt     []string
	plan       *plan // the remediation planned while assessing, for RemediateAssessed
}

// Assess reads the host facts the policy decides on: effective stapling, whether the include
// is wired and already turns stapling off, and, through the same plan and guard a real
// remediation applies (without --force), whether a remediation would be refused and why. It
// only reads; the daemon and the audit both decide on it. It assesses for the default
// policy.must_staple (exempt); AssessFor takes the configured mode.
func Assess(l *apacheconf.Layout) Assessment { return AssessFor(l, config.MustStapleExempt) }

// AssessFor is Assess for a policy.must_staple mode (exempt or veto).
func AssessFor(l *apacheconf.Layout, mode config.MustStaple) Assessment {
	a := AssessPlannedFor(l, mode)
	a.plan = nil // two readings of a big config: not kept where nothing will write
	return a
}

// AssessPlanned is Assess keeping the remediation's plan (the config as it is and as it
// would be), for RemediateAssessed: the daemon decides and writes on the same reading.
func AssessPlanned(l *apacheconf.Layout) Assessment {
	return AssessPlannedFor(l, config.MustStapleExempt)
}

// AssessPlannedFor is AssessPlanned for a policy.must_staple mode.
func AssessPlannedFor(l *apacheconf.Layout, mode config.MustStaple) Assessment {
	r := &Remediator{Layout: l, MustStaple: mode}
	a := Assessment{Facts: policy.Facts{Include: l.Include, Effective: apacheconf.StaplingUnknown}, MustStaple: r.mode()}
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
		a.Exempt = p.exempted()
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
		a.Facts.Overrides = overridesBesides(a.Config)
		a.Facts.Exempted = ExemptedNow(a.Config)
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
	if a != nil && a.plan != nil && a.plan.layout == r.Layout && a.plan.action == state.Remediate && a.plan.mode == r.mode() && a.plan.unchanged() {
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

	unfinished, err := r.State.Unfinished(r.Layout.Include)
	if err != nil {
		return nil, &Error{Outcome: Failed, Err: err}
	}
	// Temp files a crash left: beside the include, and beside every file of this plan and of
	// the interrupted transaction (the journal lists them).
	temps := append([]string{r.Layout.Include}, pre.files()...)
	if unfinished != nil {
		temps = append(temps, unfinished.Files...)
	}
	for _, h := range temps {
		if removed, err := apacheconf.CleanTemps(r.Layout.Path(h)); err != nil {
			r.Log.Warn().Err(err).Msg("could not remove stale temp files")
		} else if len(removed) > 0 {
			r.Log.Info().Strs("files", removed).Msg("removed temp files left by an interrupted run")
		}
	}
	// An admin may save the include between our read and our write; the write then fails
	// with ErrChanged and we plan again from the new bytes.
	for attempt := 1; ; attempt++ {
		// The first attempt reuses the pre-check's plan while the include still holds the bytes
		// it planned from (reading a 3,000-account config twice more would double the wait);
		// the write compares them once more before it replaces anything.
		var p *plan
		if attempt == 1 && unfinished == nil && pre.unchanged() {
			p = pre
		}
		rep, err := r.attempt(ctx, action, unfinished, p)
		if !errors.Is(err, apacheconf.ErrChanged) || attempt == 3 {
			return rep, err
		}
		r.Log.Warn().Err(err).Msg("a file of the change changed while we were writing it; planning again")
	}
}

// unchanged reports whether every file the plan read for its change still holds the bytes
// it was planned from.
func (p *plan) unchanged() bool {
	if !p.snap.Unchanged() {
		return false
	}
	for _, f := range p.exempt {
		if !f.snap.Unchanged() {
			return false
		}
	}
	return true
}

func (r *Remediator) attempt(ctx context.Context, action state.Action, unfinished *state.Entry, p *plan) (*Report, error) {
	var err error
	if p == nil {
		if p, err = r.plan(action); err != nil {
			r.journal(action, state.Refused, err, "", nil)
			return nil, err
		}
	}
	rep := &Report{Action: action, Changed: p.changed, Before: p.before, After: p.after.EffectiveStapling(), Exempted: p.exempted()}
	if err := r.guard(p); err != nil {
		r.journal(action, state.Refused, err, "", nil)
		return nil, err
	}
	for _, h := range p.leftAlone {
		r.say("%s: warning: %s is not exactly stapling-agent's exemption (edited by hand?); left as it is", action, h)
	}
	if !p.changed && p.wired && p.exemptWired && unfinished == nil {
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
	files := p.files()

	if p.changed {
		if p.incChanged && p.snap.Exists {
			if rep.Backup, err = r.State.Backup(path.Base(r.Layout.Include), p.snap.Data); err != nil {
				return nil, &Error{Outcome: Failed, Err: err}
			}
		}
		// The intent, with every file of the transaction, goes to the journal before any
		// file changes: a run killed between two writes, or after the last one but before
		// the restart, is finished by the next run.
		if err := r.State.Append(r.entry(action, state.Intent, nil, rep.Backup, files)); err != nil {
			return nil, &Error{Outcome: Failed, Err: err}
		}
		if err := r.writeAll(p); err != nil {
			werr := err
			rerr, untidy := r.restoreFiles(ctx, p)
			r.untidy(action, untidy)
			if rerr != nil {
				r.journal(action, state.Failed, fmt.Errorf("%w; restore failed: %v", err, rerr), "", files)
				return nil, failed("%s: %w; AND restoring the files written before failed: %v; restore them from %s", action, err, rerr, r.State.Dir+"/backups")
			}
			if errors.Is(err, apacheconf.ErrChanged) {
				r.journal(action, state.Noop, err, "", files)
				return nil, &Error{Outcome: Failed, Err: err}
			}
			r.journal(action, state.Failed, werr, "", files)
			return nil, failed("%w (every file of the change restored)", werr)
		}
		r.journal(action, state.Written, nil, rep.Backup, files)
		byHost := map[string]*fileChange{}
		for _, f := range p.exempt {
			byHost[f.host] = f
		}
		for _, h := range files { // in the order written
			switch f := byHost[h]; {
			case f == nil:
				r.say("%s: wrote %s (%s)", action, h, r.changeWords(action, rep.Backup))
			case f.remove:
				rep.Removed = append(rep.Removed, h)
				r.say("%s: removed %s (stapling-agent's Must-Staple exemption)", action, h)
			default:
				r.say("%s: wrote %s: stapling stays on for %s (Must-Staple certificate)", action, h, strings.Join(f.names, ", "))
			}
		}
	} else if unfinished == nil {
		// Unchanged content but not wired: the rebuild below is the whole change.
		if err := r.State.Append(r.entry(action, state.Intent, nil, "", files)); err != nil {
			return nil, &Error{Outcome: Failed, Err: err}
		}
	}

	if !p.wired || !p.exemptWired {
		if err := r.rebuild(ctx, p, action); err != nil {
			return nil, err
		}
	}
	if err := r.testAndRestart(ctx, p, action); err != nil {
		return nil, err
	}
	exempt := map[string]bool{}
	for _, f := range p.exempt {
		for _, n := range f.names {
			exempt[n] = !f.remove
		}
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
			if action == state.Remediate && a.Err == nil && a.Stapled && !exempt[b.Name] {
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
	done := r.entry(action, state.Done, nil, rep.Backup, files)
	done.Detail = detail
	r.record(done, nil)
	rep.After = p.after.EffectiveStapling() // after a rebuild, what Apache reads now
	r.say("%s: done: effective OCSP stapling is now %s", action, rep.After)
	if len(rep.Exempted) > 0 {
		r.say("%s: stapling kept on for Must-Staple vhosts: %s", action, strings.Join(rep.Exempted, "; "))
	}
	if len(p.alsoOn) > 0 {
		r.say("%s: note: the exemption also keeps stapling on for %s (same userdata include)", action, strings.Join(p.alsoOn, ", "))
	}
	if others := overridesBesides(p.after); rep.After == apacheconf.StaplingMixed && others != "" {
		r.say("%s: warning: some SSL vhosts still turn stapling on themselves: %s", action, others)
	}
	return rep, nil
}

// ExemptedNow names the SSL vhosts whose stapling our own per-vhost exemption file keeps on
// (policy.must_staple exempt, after a remediation).
func ExemptedNow(c *apacheconf.Config) []string {
	var out []string
	for _, v := range c.Overrides() {
		if v.SSL && v.Stapling == "on" && path.Base(v.StaplingAt.File) == apacheconf.ExemptFileName {
			out = append(out, v.Name())
		}
	}
	return out
}

// overridesBesides is OverrideList without our own exemptions.
func overridesBesides(c *apacheconf.Config) string {
	var parts []string
	for _, v := range c.Overrides() {
		if v.SSL && v.Stapling == "on" && path.Base(v.StaplingAt.File) != apacheconf.ExemptFileName {
			parts = append(parts, fmt.Sprintf("%s (%s:%d)", v.Name(), v.StaplingAt.File, v.StaplingAt.Line))
		}
	}
	return strings.Join(parts, ", ")
}

// writeAll writes every file of the transaction in p.files' order, each compared with its
// snapshot and replaced atomically (temp file, fsync, rename, fsync of the directory), an
// exemption file's missing directories made first. It stops at the first failure; the caller
// restores what was written (p.written).
func (r *Remediator) writeAll(p *plan) error {
	l := r.Layout
	byHost := map[string]*fileChange{}
	for _, f := range p.exempt {
		byHost[f.host] = f
	}
	for _, h := range p.files() {
		f := byHost[h]
		if f == nil { // the include
			if err := p.snap.WriteAtomic(p.next); err != nil {
				return fmt.Errorf("write %s: %w", h, err)
			}
			p.written = append(p.written, p.snap)
			continue
		}
		if f.remove {
			if err := f.snap.RemoveCompared(); err != nil {
				return fmt.Errorf("remove %s: %w", h, err)
			}
			p.written = append(p.written, f.snap)
			if f.rmdir {
				// Only if still empty: os.Remove refuses a directory someone wrote to since.
				if err := os.Remove(l.Path(path.Dir(h))); err != nil {
					return fmt.Errorf("remove the directory of %s: %w", h, err)
				}
				f.removedDir = true
			}
			continue
		}
		created, err := apacheconf.MkdirNew(l.Root, path.Dir(h))
		f.created = created
		if err != nil {
			return fmt.Errorf("create the directory of %s: %w", h, err)
		}
		if err := f.snap.WriteAtomic(apacheconf.ExemptContent()); err != nil {
			return fmt.Errorf("write %s: %w", h, err)
		}
		p.written = append(p.written, f.snap)
	}
	return nil
}

// restoreFiles undoes the transaction's writes: every file written gets its previous bytes
// back (newest first; one that did not exist is removed), the directories it made go, and
// when a rebuild ran, httpd.conf is made to match again by running the rebuild once more (it
// runs through PID 1, outside the daemon's sandbox, where httpd.conf is read-only); only if
// that fails are httpd.conf's pre-rebuild bytes written back. lost is about files that are
// not back as they were (a person must look); untidy about leftovers Apache is not affected
// by (a directory an admin put a file in meanwhile).
func (r *Remediator) restoreFiles(ctx context.Context, p *plan) (lost, untidy error) {
	var lostErrs, untidyErrs []error
	for _, f := range p.exempt {
		if f.removedDir {
			if err := os.Mkdir(r.Layout.Path(path.Dir(f.host)), 0o755); err != nil {
				lostErrs = append(lostErrs, err)
			}
			f.removedDir = false
		}
	}
	for i := len(p.written) - 1; i >= 0; i-- {
		if err := p.written[i].Restore(); err != nil {
			lostErrs = append(lostErrs, err)
		}
	}
	p.written = nil
	// Before the rebuild, so it no longer wires a directory we made.
	for _, f := range p.exempt {
		for i := len(f.created) - 1; i >= 0; i-- {
			if err := os.Remove(r.Layout.Path(f.created[i])); err != nil {
				untidyErrs = append(untidyErrs, err)
			}
		}
		f.created = nil
	}
	if p.rebuilt {
		if _, err := r.Runner.Run(ctx, r.Cmds.Rebuild); err != nil {
			err = fmt.Errorf("rebuilding %s after the restore: %w", r.Layout.HTTPDConf, err)
			if p.httpdSnap == nil {
				lostErrs = append(lostErrs, err)
			} else if rerr := p.httpdSnap.Restore(); rerr != nil {
				lostErrs = append(lostErrs, fmt.Errorf("%w; writing back its previous bytes: %v", err, rerr))
			}
		}
		p.rebuilt = false
	}
	return errors.Join(lostErrs...), errors.Join(untidyErrs...)
}

// untidy reports leftovers of a restore that change nothing Apache reads.
func (r *Remediator) untidy(action state.Action, err error) {
	if err != nil {
		r.Log.Warn().Err(err).Msg("left after the restore")
		r.say("%s: warning: left after the restore (Apache is not affected): %v", action, err)
	}
}

func (r *Remediator) noopReason(p *plan) string {
	if p.action == state.Revert {
		return fmt.Sprintf("no stapling-agent block in %s and no exemption file of ours", r.Layout.Include)
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
// pre-VirtualHost include only if the file existed at the last rebuild, and the one for a
// vhost's userdata directory only if the directory existed (ea4_main.default, ssl_vhost).
func (r *Remediator) rebuild(ctx context.Context, p *plan, action state.Action) error {
	l := r.Layout
	var missing []string
	if !p.wired {
		missing = append(missing, l.Include)
	}
	if !p.exemptWired && action == state.Remediate {
		// cPanel writes a vhost's userdata Include line only for a directory that existed
		// at the last rebuild; until then it is a comment.
		missing = append(missing, "the userdata include of "+strings.Join(p.exempted(), "; "))
	}
	what := strings.Join(missing, ", nor ")
	if len(r.Cmds.Rebuild) == 0 {
		return r.rollback(ctx, p, action, Refused, false,
			fmt.Errorf("%s does not include %s and no rebuild command is configured", l.HTTPDConf, what))
	}
	if action == state.Revert && p.wired {
		r.say("%s: %s still names the userdata directories the revert removed; running %s", action, l.HTTPDConf, strings.Join(r.Cmds.Rebuild, " "))
	} else {
		r.say("%s: %s does not include %s yet; running %s", action, l.HTTPDConf, what, strings.Join(r.Cmds.Rebuild, " "))
	}
	// httpd.conf is part of the transaction from here (see plan.httpdSnap); a symlinked
	// httpd.conf cannot be snapshotted and is left as rebuilt.
	p.httpdSnap, _ = apacheconf.Snapshot(l.Path(l.HTTPDConf))
	p.rebuilt = true
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
		if missing := notExempted(cfg, p); len(missing) > 0 {
			return r.rollback(ctx, p, action, Refused, false,
				fmt.Errorf("after %s, stapling would still go off for Must-Staple vhost(s): %s; wire their userdata includes by hand, or reissue those certificates without Must-Staple",
					strings.Join(r.Cmds.Rebuild, " "), strings.Join(missing, "; ")))
		}
		p.exemptWired = true
	}
	p.after = cfg // what Apache reads now that the include is wired
	r.journal(action, state.Rebuilt, nil, "", p.files())
	return nil
}

// notExempted names the vhosts p exempts that cfg (read after a rebuild, which may reorder
// vhosts: matched by name) does not keep stapling on through their exemption file.
func notExempted(cfg *apacheconf.Config, p *plan) []string {
	var out []string
	for _, f := range p.exempt {
		if f.remove {
			continue
		}
		for _, name := range f.names {
			found := false
			for _, v := range cfg.VHosts {
				if v.SSL && v.Name() == name {
					found = true
					if !cfg.StaplingOf(v) || v.StaplingAt.File != f.host {
						out = append(out, fmt.Sprintf("%s does not read %s", name, f.host))
					}
				}
			}
			if !found {
				out = append(out, name+" is gone from the config")
			}
		}
	}
	return out
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

// rollback restores every file of the transaction byte for byte (files it created are
// removed) and, if a restart had been attempted, runs the restart once more so Apache comes
// back on the old config. The returned error wraps cause.
func (r *Remediator) rollback(ctx context.Context, p *plan, action state.Action, outcome Outcome, restarted bool, cause error) error {
	files := p.files()
	if !p.changed {
		r.journal(action, state.Failed, cause, "", files)
		return &Error{Outcome: Failed, Err: fmt.Errorf("%s: %w (the include was not changed by this run)", action, cause)}
	}
	what := strings.Join(files, ", ")
	lost, untidy := r.restoreFiles(ctx, p)
	r.untidy(action, untidy)
	// Apache was restarted on the change: restart it on what is on disk now whatever the
	// restore managed, since that is its best chance to serve.
	var restartErr error
	if restarted {
		_, restartErr = r.Runner.Run(ctx, r.Cmds.Restart)
	}
	switch {
	case lost != nil:
		restart := ""
		if restarted {
			restart = "; Apache restarted on what is on disk"
			if restartErr != nil {
				restart = fmt.Sprintf("; restarting Apache ALSO failed, Apache may be down: %v", restartErr)
			}
		}
		r.journal(action, state.Failed, fmt.Errorf("%w; restore failed: %v%s", cause, lost, restart), "", files)
		return failed("%s: %w; AND restoring failed: %v; restore by hand from %s%s", action, cause, lost, r.State.Dir+"/backups", restart)
	case restartErr != nil:
		r.journal(action, state.Failed, fmt.Errorf("%w; restart on the old config failed: %v", cause, restartErr), "", files)
		return failed("%s: %w; restored %s byte for byte; restarting Apache on the old config ALSO failed, Apache may be down: %v", action, cause, what, restartErr)
	}
	step := state.RolledBack
	if outcome == Refused {
		step = state.Refused
	}
	r.journal(action, step, cause, "", files)
	if restarted {
		return &Error{Outcome: outcome, Err: fmt.Errorf("%s: %w; restored %s byte for byte and restarted Apache on it", action, cause, what)}
	}
	return &Error{Outcome: outcome, Err: fmt.Errorf("%s: %w; restored %s byte for byte", action, cause, what)}
}

func (r *Remediator) dryRun(action state.Action) (*Report, error) {
	p, err := r.plan(action)
	if err != nil {
		return nil, err
	}
	if err := r.guard(p); err != nil {
		return nil, err
	}
	rep := &Report{Action: action, Changed: p.changed, Before: p.before, After: p.after.EffectiveStapling(), Exempted: p.exempted()}
	r.say("dry run: %s would change nothing on disk and run nothing now", action)
	for _, h := range p.leftAlone {
		r.say("%s: warning: %s is not exactly stapling-agent's exemption (edited by hand?); it would be left as it is", action, h)
	}
	if !p.changed && p.wired && p.exemptWired {
		rep.Noop = true
		r.say("%s: nothing to do: %s", action, r.noopReason(p))
		return rep, nil
	}
	byHost := map[string]*fileChange{}
	for _, f := range p.exempt {
		byHost[f.host] = f
	}
	for _, h := range p.files() {
		switch f := byHost[h]; {
		case f == nil:
			io.WriteString(r.Out, unifiedDiff(r.Layout.Include, p.snap.Data, p.next, p.snap.Exists))
		case f.remove:
			r.say("would remove %s (stapling-agent's Must-Staple exemption)", h)
		default:
			r.say("would create %s: stapling stays on for %s (Must-Staple certificate)", h, strings.Join(f.names, ", "))
			io.WriteString(r.Out, unifiedDiff(h, nil, apacheconf.ExemptContent(), false))
		}
	}
	if !p.wired || !p.exemptWired {
		r.say("would run: %s   (%s does not include every file yet)", strings.Join(r.Cmds.Rebuild, " "), r.Layout.HTTPDConf)
	}
	r.say("would run: %s", strings.Join(r.Cmds.ConfigTest, " "))
	r.say("would run: %s", strings.Join(r.Cmds.Restart, " "))
	r.say("effective OCSP stapling would be: %s", rep.After)
	if len(rep.Exempted) > 0 {
		r.say("stapling would stay on for Must-Staple vhosts: %s", strings.Join(rep.Exempted, "; "))
	}
	return rep, nil
}

// handshakes verifies up to maxVerify local SSL vhosts of the config as it will be.
func (r *Remediator) handshakes(ctx context.Context, p *plan) []probe.Handshake {
	return probe.Handshakes(ctx, r.Verify, probe.Targets(r.Layout, p.after, maxVerify))
}

// entry is a journal line. File is always the include (the transaction's key: Unfinished,
// Acts and Memory look it up); Files lists every file of a transaction with more than the
// include, in write order.
func (r *Remediator) entry(action state.Action, step state.Step, err error, backup string, files []string) state.Entry {
	e := state.Entry{Time: r.Now(), Run: runID, Action: action, Step: step, File: r.Layout.Include, Result: state.OK, Backup: backup}
	if len(files) > 1 || (len(files) == 1 && files[0] != r.Layout.Include) {
		e.Files = files
	}
	if err != nil {
		e.Result, e.Error = state.Error, err.Error()
	}
	return e
}

// journal records a step; a journal that cannot be written is logged, not fatal, once the
// intent is safely recorded.
func (r *Remediator) journal(action state.Action, step state.Step, err error, backup string, files []string) {
	r.record(r.entry(action, step, err, backup, files), err)
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
