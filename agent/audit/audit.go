// Package audit is the read-only report for people and fleets: the error_log window with its
// failures, causes and responders, Apache's effective stapling, our block and journal, and
// what the daemon would do now, decided by policy.Decide on the same inputs the daemon uses.
// It never writes an Apache file and never runs a command. Render writes it as text, JSON,
// Nagios or Prometheus.
package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/escape"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/remediate"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

// Schema versions the JSON. Fields are only ever added within v1.
const Schema = "stapling-agent/audit/v1"

// Status is the audit's verdict, in the Nagios plugin convention.
type Status string

const (
	OK       Status = "ok"
	Warning  Status = "warning"
	Critical Status = "critical"
	Unknown  Status = "unknown"
)

// Code is the Nagios exit code: 0 ok, 1 warning, 2 critical, 3 unknown.
func (s Status) Code() int {
	switch s {
	case OK:
		return 0
	case Warning:
		return 1
	case Critical:
		return 2
	}
	return 3
}

// ActionKind is what the audit suggests doing.
type ActionKind string

const (
	ActRemediate      ActionKind = "remediate"       // what the daemon would do, or would refuse
	ActRebuild        ActionKind = "rebuild"         // rebuildhttpdconf wires the include (EA4)
	ActWireInclude    ActionKind = "wire_include"    // add the Include by hand (EA3)
	ActReviewOverride ActionKind = "review_override" // a vhost turns stapling back on
	ActInvestigate    ActionKind = "investigate"     // failures after our remediation
)

// Check names the parts of the audit, each reported ok or with its error.
type Check string

const (
	CheckLayout       Check = "layout"
	CheckApacheConfig Check = "apache_config"
	CheckInclude      Check = "include"
	CheckErrorLog     Check = "error_log"
	CheckApacheAgrees Check = "apache_agrees" // httpd's own answers match the agent's reading
)

// Report is the audit's result; its JSON form is documented in the README.
type Report struct {
	Schema       string    `json:"schema"`
	Host         string    `json:"host"`
	GeneratedAt  time.Time `json:"generated_at"`
	AgentVersion string    `json:"agent_version"`
	Status       Status    `json:"status"`
	Summary      string    `json:"summary"`

	Layout struct {
		Kind         apacheconf.Kind `json:"kind"`
		HTTPDConf    string          `json:"httpd_conf"`
		IncludeFile  string          `json:"include_file"`
		IncludeWired bool            `json:"include_wired"`
		ErrorLog     string          `json:"error_log"`
		// ErrorLogFormat is the main server's custom format as configured, "" for Apache's
		// default; the audit reads failures in it.
		ErrorLogFormat string `json:"error_log_format,omitempty"`
		RestartCommand string `json:"restart_command"`
	} `json:"layout"`
	Window struct {
		Since time.Time `json:"since"`
		Until time.Time `json:"until"`
	} `json:"window"`
	Log struct {
		Files        []string `json:"files"`
		BytesScanned int64    `json:"bytes_scanned"`
		LinesScanned int64    `json:"lines_scanned"`
		SkippedLines int64    `json:"skipped_lines"`
		// (see Report.Apache for what httpd itself said)
		// Disordered counts files whose lines were out of time order where the window
		// search probed (forged dates, a clock step): they were read whole, so no forged
		// block can steer the search past an outage.
		Disordered int64 `json:"disordered_files"`
	} `json:"log"`
	Failures struct {
		Total       int            `json:"total"`
		ByCause     map[string]int `json:"by_cause"`
		ByResponder map[string]int `json:"by_responder"`
		First       *time.Time     `json:"first"`
		Last        *time.Time     `json:"last"`
		MaxInWindow int            `json:"max_in_window"`
		// AfterRemediation counts failures logged after our last completed remediation.
		AfterRemediation int `json:"after_remediation"`
		// Foreign counts the failures (of Total) naming a responder that no certificate an SSL
		// vhost serves uses: a tenant's own certificate or a forged line. Reported, never
		// counted toward the policy (MaxInWindow and the decision leave them out).
		Foreign int `json:"foreign"`
		// Skewed counts failure lines dated out of order (more than policy.MaxSkew before a
		// line already read, or after now): not written by Apache when they claim. Never
		// counted.
		Skewed int `json:"skewed"`
		// BackendOnly counts the failures (of Total) Apache logged while another server
		// answers on the HTTPS port (frontend): only clients reaching Apache's backend port
		// directly met them.
		BackendOnly int `json:"backend_only"`
	} `json:"failures"`
	CertificateEvents EventSummary `json:"certificate_events"`
	InitEvents        EventSummary `json:"init_events"`
	Stapling          struct {
		Effective     apacheconf.Stapling `json:"effective"`
		Global        string              `json:"global"` // on | off | "" (unset: Apache's default, off)
		GlobalAt      string              `json:"global_at,omitempty"`
		ManagedBlock  bool                `json:"managed_block"`
		RemediatedAt  *time.Time          `json:"remediated_at,omitempty"`
		StaplingCache string              `json:"stapling_cache"`
		Overrides     []Override          `json:"overrides"`
		// MustStaple lists SSL vhosts serving Must-Staple certificates: remediation keeps
		// stapling on for them through a per-vhost include (policy.must_staple exempt) or is
		// refused while stapling would be turned off for them (veto).
		MustStaple []Override `json:"must_staple"`
		// MustStapleMode is policy.must_staple; WouldExempt names the vhosts a remediation now
		// would keep stapling on for (each with its per-vhost include); Exempted those our
		// exemption files keep it on for already.
		MustStapleMode string   `json:"must_staple_mode"`
		WouldExempt    []string `json:"would_exempt"`
		Exempted       []string `json:"exempted"`
	} `json:"stapling"`
	Policy struct {
		Threshold int    `json:"threshold"`
		Window    string `json:"window"`
		// WouldAct: the daemon, replaying the last policy window now, would turn stapling off
		// (or, in dry-run mode, say it would).
		WouldAct bool `json:"would_act"`
		// ReachedAt is the first time in the audit window that the threshold was reached.
		ReachedAt *time.Time `json:"reached_at"`
		// Decision is what the daemon would decide now, and why.
		Decision policy.Decision `json:"decision"`
		Mode     policy.Mode     `json:"mode"`
		// Paused: the pause file (policy.pause_file, PauseFile) exists, so the daemon decides
		// and reports but never acts (decision paused where it would act).
		Paused    bool   `json:"paused"`
		PauseFile string `json:"pause_file,omitempty"`
	} `json:"policy"`
	Actions []Action `json:"actions"`
	// Checks say which parts of the audit worked, like node_exporter's scrape_collector_success.
	Checks []CheckResult `json:"checks"`
	// Probe is present with --probe.
	Probe *probe.Report             `json:"probe,omitempty"`
	pairs map[string]map[string]int // failures by cause, then responder
	// FrontEnd is who answers on the HTTPS port; Nginx is NGINX's side when it does.
	FrontEnd *FrontEnd    `json:"frontend"`
	Nginx    *NginxReport `json:"nginx,omitempty"`
	// WHM is WHM's own "SSL Use Stapling" switch next to what Apache does.
	WHM *WHM `json:"whm,omitempty"`
	// Apache is what httpd said when asked, read-only, and whether the agent's reading of the
	// config agrees with it.
	Apache struct {
		Asked    bool     `json:"asked"`
		Error    string   `json:"error,omitempty"` // why it was not asked, or not answered
		Version  string   `json:"version,omitempty"`
		Loaded   []string `json:"loaded_modules,omitempty"`
		ErrorLog string   `json:"error_log,omitempty"`
		// DumpConfig: the reading was also compared, directive by directive, with Apache's
		// own `-t -D DUMP_CONFIG` (only where mod_info is loaded).
		DumpConfig   bool   `json:"dump_config"`
		Disagreement string `json:"disagreement,omitempty"`
	} `json:"apache"`
}

// EventSummary counts non-outage stapling lines: certificate status problems, and init-time
// "certificate without OCSP URL" lines that every start and graceful restart prints.
type EventSummary struct {
	Total    int            `json:"total"`
	ByCode   map[string]int `json:"by_code"`
	Last     *time.Time     `json:"last"`
	Examples []EventExample `json:"examples"`
}

type EventExample struct {
	Time   time.Time `json:"time"`
	Code   string    `json:"code"`
	Detail string    `json:"detail"`
}

const maxExamples = 5

type Override struct {
	File  string `json:"file"`
	Line  int    `json:"line"`
	VHost string `json:"vhost"`
	Value string `json:"value"`
}

type Action struct {
	Action      ActionKind `json:"action"`
	Target      string     `json:"target"`
	WouldChange bool       `json:"would_change"`
	Reason      string     `json:"reason"`
}

type CheckResult struct {
	Name   Check  `json:"name"`
	Status string `json:"status"` // ok | error
	Error  string `json:"error,omitempty"`
}

func (s *EventSummary) add(ev logwatch.Event) {
	s.Total++
	s.ByCode[ev.Code]++
	t := ev.Time.UTC()
	s.Last = &t
	if len(s.Examples) < maxExamples {
		s.Examples = append(s.Examples, EventExample{Time: t, Code: ev.Code, Detail: ev.Detail})
	}
}

// Options are the audit's own flags.
type Options struct {
	Since        time.Duration // how far back to read error_log
	Host         string
	Probe        bool          // also probe the SSL vhosts and responders now
	ProbeTimeout time.Duration // for each handshake and OCSP request
	Version      string        // the agent's version, for the report
	// Ask asks a responder from this host when the decision needs corroboration (the audit
	// says what the daemon would do, so it asks as the daemon would); nil is the real one.
	Ask remediate.Asker
	// NoExec forbids asking httpd (-v, -l, -M, -t -D DUMP_RUN_CFG); the report then says what
	// could not be checked.
	NoExec bool
}

// Run reads the layout, the Apache config, the include, our journal and the error_log window,
// and asks the policy what the daemon would do now. It never writes and never runs a command.
func Run(ctx context.Context, e *env.Env, o Options) *Report {
	now := e.Now()
	cfg := e.Config
	r := &Report{Schema: Schema, Host: o.Host, GeneratedAt: now.UTC(), AgentVersion: o.Version}
	r.Window.Since, r.Window.Until = now.Add(-o.Since).UTC(), now.UTC()
	r.Failures.ByCause, r.Failures.ByResponder = map[string]int{}, map[string]int{}
	r.CertificateEvents.ByCode, r.InitEvents.ByCode = map[string]int{}, map[string]int{}
	r.CertificateEvents.Examples, r.InitEvents.Examples = []EventExample{}, []EventExample{}
	r.Log.Files, r.Stapling.Overrides, r.Actions = []string{}, []Override{}, []Action{}
	r.Stapling.MustStaple = []Override{}
	r.Policy.Threshold, r.Policy.Window, r.Policy.Mode = cfg.Policy.Threshold, policy.ShortDuration(cfg.Policy.Window), cfg.Mode
	r.Policy.Decision = policy.Decision{Kind: policy.None}
	r.Policy.PauseFile = cfg.Policy.PauseFile
	paused := cfg.Paused(e.Root)
	r.Policy.Paused = paused != ""
	r.Stapling.Effective = apacheconf.StaplingUnknown

	check := func(name Check, err error) bool {
		c := CheckResult{Name: name, Status: "ok"}
		if err != nil {
			c.Status, c.Error = "error", err.Error()
		}
		r.Checks = append(r.Checks, c)
		return err == nil
	}

	r.Layout.Kind = apacheconf.KindUnknown
	if !check(CheckLayout, e.LayoutErr) {
		r.Status, r.Summary = Unknown, "no cPanel Apache layout found: "+e.LayoutErr.Error()
		return r
	}
	l := e.Layout
	r.Layout.Kind, r.Layout.HTTPDConf, r.Layout.IncludeFile = l.Kind, l.HTTPDConf, l.Include
	r.Layout.RestartCommand = l.Restart

	// Ask httpd, read-only, what only it knows; its compiled-in modules and version drive the
	// evaluation of <IfModule> and <IfVersion>, and its answers check the agent's reading.
	if o.NoExec {
		r.Apache.Error = "not asked (--no-exec): compiled-in modules and version assumed (" + apacheconf.DefaultApache.Version + "), the reading not checked against Apache's"
	} else if ans, err := apacheconf.Ask(ctx, e.Runner, l); err != nil {
		r.Apache.Error = "could not ask httpd: " + err.Error()
	} else {
		asked := *l
		asked.Answers = ans
		l = &asked
		r.Apache.Asked, r.Apache.Version, r.Apache.Loaded, r.Apache.ErrorLog = true, ans.Apache.Version, ans.Loaded, ans.ErrorLog
		r.Apache.DumpConfig = ans.Dump != nil
	}

	// Apache config and include: the same assessment the daemon decides on, and who answers
	// on the HTTPS port (the policy does not restart Apache for a backend's failures).
	a := remediate.AssessFor(l, cfg.Policy.MustStaple)
	a.Facts.FrontEnd = r.addFrontEnd(ctx, l.Root, now)
	r.Apache.Disagreement = a.Disagreement
	// The error log Apache really writes (the config's ErrorLog), in the only format parsed.
	logPath, logFormat, logPathErr := a.ErrorLog(l)
	r.Layout.ErrorLog = logPath
	if a.Config != nil {
		r.Layout.ErrorLogFormat = a.Config.ErrorLogFormat
	}
	if logPathErr != nil {
		r.Layout.ErrorLog = l.ErrorLog
	}
	if check(CheckApacheConfig, a.ConfigErr) {
		c := a.Config
		r.Layout.IncludeWired = a.Facts.Wired
		r.Stapling.Effective, r.Stapling.Global = a.Facts.Effective, c.Global
		if c.Global != "" {
			r.Stapling.GlobalAt = fmt.Sprintf("%s:%d", c.GlobalAt.File, c.GlobalAt.Line)
		}
		r.Stapling.StaplingCache = c.StaplingCache
		r.Stapling.MustStapleMode = string(cfg.Policy.MustStaple)
		r.Stapling.WouldExempt, r.Stapling.Exempted = nonNil(a.Exempt), nonNil(a.Facts.Exempted)
		for _, v := range c.Overrides() {
			r.Stapling.Overrides = append(r.Stapling.Overrides, Override{File: v.StaplingAt.File, Line: v.StaplingAt.Line, VHost: v.Name(), Value: v.Stapling})
		}
		for _, v := range probe.MustStapleVHosts(l, c.VHosts) {
			r.Stapling.MustStaple = append(r.Stapling.MustStaple, Override{File: v.File, Line: v.Line, VHost: v.Name(), Value: v.CertFile})
		}
	}
	include, incErr := apacheconf.ReadFile(l.Path(l.Include), apacheconf.MaxConfigFile)
	if errors.Is(incErr, fs.ErrNotExist) {
		incErr = nil
	}
	if check(CheckInclude, incErr) {
		r.Stapling.ManagedBlock = apacheconf.InspectInclude(include).ManagedBlock
	}
	r.addWHM(l.Root)
	journal, _ := e.State.Journal()
	acts := state.Acts(journal, l.Include)
	if r.Stapling.ManagedBlock {
		r.Stapling.RemediatedAt = remediatedAt(journal, l)
	}

	// error_log window: history for the report, and the daemon's start-up replay (the last
	// policy window) for the decision.
	all := &policy.Counter{Window: cfg.Policy.Window}
	replay := &policy.Counter{Window: cfg.Policy.Window}
	var reached, cutoff, latest time.Time
	// The daemon's start-up replay: the last policy window, counted with today's memory.
	memNow := state.MemoryAt(acts, now)
	recent, daemonView := now.Add(-cfg.Policy.Window), &policy.Counter{Window: cfg.Policy.Window}
	var corr logwatch.Correlator
	if a.Disagreement != "" {
		check(CheckApacheAgrees, errors.New(a.Disagreement))
		r.Status, r.Summary = Unknown, "Apache's own reading of its config differs from the agent's, so nothing here can be trusted: "+a.Disagreement
		return r
	}
	if logPathErr != nil {
		check(CheckErrorLog, logPathErr)
		r.Status, r.Summary = Unknown, "cannot audit the error log: "+logPathErr.Error()
		return r
	}
	st, logErr := logwatch.ScanHistoryFormat(ctx, l.Path(logPath), logFormat, r.Window.Since, now.Add(time.Second), func(ev logwatch.Event) {
		switch ev.Kind {
		case logwatch.KindCertStatus:
			r.CertificateEvents.add(ev)
		case logwatch.KindInit:
			r.InitEvents.add(ev)
		}
		f, ok := corr.Add(ev)
		if !ok {
			return
		}
		if f.Time.After(now.Add(policy.MaxSkew)) || (!latest.IsZero() && f.Time.Before(latest.Add(-policy.MaxSkew))) {
			r.Failures.Skewed++
			return
		}
		latest = later(latest, f.Time)
		r.addFailure(f, a.Facts.Proxy)
		key, served := a.Facts.Attribute(f.Responder)
		if !served {
			r.Failures.Foreign++
			return
		}
		all.Add(f.Time, key)
		if f.Time.After(recent) && memNow.Counts(f.Time) {
			daemonView.Add(f.Time, key)
		}
		// Counted as the daemon counts: not within the grace after our own restart, and the
		// window starts again after each of our remediations.
		mem := state.MemoryAt(acts, f.Time)
		if !mem.Counts(f.Time) {
			return
		}
		if !mem.Cutoff.Equal(cutoff) {
			cutoff = mem.Cutoff
			replay.Reset()
		}
		n := replay.Add(f.Time, key)
		if n >= cfg.Policy.Threshold && reached.IsZero() {
			reached = f.Time
		}
	})
	for _, f := range st.Files {
		r.Log.Files = append(r.Log.Files, apacheconf.Unroot(l.Root, f))
	}
	r.Log.BytesScanned, r.Log.LinesScanned, r.Log.SkippedLines, r.Log.Disordered = st.Bytes, st.Lines, st.Skipped, st.Disordered
	r.Failures.MaxInWindow = all.Max
	if a.Facts.FrontEnd != "" {
		r.Failures.BackendOnly = r.Failures.Total
	}
	if !reached.IsZero() {
		t := reached.UTC()
		r.Policy.ReachedAt = &t
	}
	if !check(CheckErrorLog, logErr) {
		r.Status = Unknown
		r.Summary = "cannot read the error log: " + logErr.Error()
		switch {
		case errors.Is(logErr, context.DeadlineExceeded):
			r.Summary = "the audit ran out of time (--timeout) while reading the error log"
		case errors.Is(logErr, context.Canceled):
			r.Summary = "the audit was stopped (signal) while reading the error log"
		}
		return r
	}
	// The decision: what the daemon, starting now, would decide after replaying the last
	// policy window (daemon.Start does exactly this).
	if o.Since < cfg.Policy.Window {
		var err error
		if daemonView, err = countSince(ctx, l.Path(logPath), logFormat, a.Facts, recent, now, memNow, cfg.Policy.Window); !check(CheckErrorLog, err) {
			r.Status, r.Summary = Unknown, "cannot read the error log: "+err.Error()
			return r
		}
	}
	ask := o.Ask
	if ask == nil {
		ask = remediate.AskFromHere
	}
	r.Policy.Decision = a.Decide(ctx, policy.Input{
		Now: now, Mode: cfg.Mode, Params: cfg.Params(), Memory: memNow, Window: daemonView.ByKey(), Paused: paused,
	}, ask)
	r.Policy.WouldAct = r.Policy.Decision.Kind == policy.Act || r.Policy.Decision.Kind == policy.DryRun
	r.decide(o, a.Facts)
	if o.Probe && a.Config != nil {
		r.addProbe(probe.Run(ctx, probe.Targets(l, a.Config, 0), o.ProbeTimeout))
	}
	return r
}

// countSince replays the policy window when the audit's own window (--since) is shorter: the
// failures from `from` on that count (after our last restart's grace), as the daemon's start
// counts them.
func countSince(ctx context.Context, logFile string, format *logwatch.Format, facts policy.Facts, from, now time.Time, mem policy.Memory, window time.Duration) (*policy.Counter, error) {
	c := &policy.Counter{Window: window}
	var corr logwatch.Correlator
	var latest time.Time
	_, err := logwatch.ScanHistoryFormat(ctx, logFile, format, from, now.Add(time.Second), func(ev logwatch.Event) {
		f, ok := corr.Add(ev)
		if !ok || f.Time.After(now.Add(policy.MaxSkew)) || (!latest.IsZero() && f.Time.Before(latest.Add(-policy.MaxSkew))) {
			return
		}
		latest = later(latest, f.Time)
		if key, served := facts.Attribute(f.Responder); served && mem.Counts(f.Time) {
			c.Add(f.Time, key)
		}
	})
	return c, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (r *Report) addFailure(f logwatch.Failure, proxy string) {
	r.Failures.Total++
	r.Failures.ByCause[string(f.Cause)]++
	resp := f.Responder
	switch {
	case resp == "":
		resp = "unknown"
	case proxy != "" && policy.ResponderKey(resp) == proxy:
		// Through SSLOCSPProxyURL mod_ssl names the proxy, not the responder.
		resp = resp + " (the SSLOCSPProxyURL proxy; the responder is not named)"
	}
	r.Failures.ByResponder[resp]++
	if r.pairs == nil {
		r.pairs = map[string]map[string]int{}
	}
	if r.pairs[string(f.Cause)] == nil {
		r.pairs[string(f.Cause)] = map[string]int{}
	}
	r.pairs[string(f.Cause)][resp]++
	t := f.Time.UTC()
	if r.Failures.First == nil {
		r.Failures.First = &t
	}
	r.Failures.Last = &t
	if r.Stapling.RemediatedAt != nil && f.Time.After(*r.Stapling.RemediatedAt) {
		r.Failures.AfterRemediation++
	}
}

// remediatedAt is when our last remediation finished, from the journal; the include's mtime
// when the journal has none (the block was written by another host's copy, or the journal was
// removed).
func remediatedAt(journal []state.Entry, l *apacheconf.Layout) *time.Time {
	if t := state.LastRemediation(journal, l.Include); !t.IsZero() {
		t = t.UTC()
		return &t
	}
	if info, err := os.Stat(l.Path(l.Include)); err == nil {
		t := info.ModTime().UTC()
		return &t
	}
	return nil
}

// addProbe attaches probe results; a responder failing now with the same cause the log shows
// confirms the diagnosis in the summary.
func (r *Report) addProbe(p *probe.Report) {
	r.Probe = p
	for _, resp := range p.Responders {
		if !resp.OK && resp.Cause != "" && r.Failures.ByCause[resp.Cause] > 0 {
			r.Summary += fmt.Sprintf("; confirmed now: %s fails from this host (%s)", resp.URL, resp.Cause)
			return
		}
	}
	for _, resp := range p.Responders {
		if !resp.OK {
			r.Summary += fmt.Sprintf("; probe: %s fails now (%s)", resp.URL, resp.Cause)
			return
		}
	}
	if len(p.Responders) > 0 && r.Failures.Total > 0 {
		r.Summary += "; probe: the responders answer now"
	}
}

// decide sets status, summary and actions from what was read and what the policy decided.
func (r *Report) decide(o Options, facts policy.Facts) {
	eff := r.Stapling.Effective
	f := &r.Failures
	dec := r.Policy.Decision
	var warnings []string

	switch dec.Kind {
	case policy.Act, policy.DryRun:
		r.Actions = append(r.Actions, Action{Action: ActRemediate, Target: r.Layout.IncludeFile, WouldChange: true, Reason: dec.Reason})
	case policy.Refused, policy.Paused:
		r.Actions = append(r.Actions, Action{Action: ActRemediate, Target: r.Layout.IncludeFile, WouldChange: false, Reason: dec.Reason})
		if len(r.Stapling.MustStaple) > 0 {
			warnings = append(warnings, "Must-Staple certificates block the automatic fix")
		}
	}
	if !r.Layout.IncludeWired && eff != apacheconf.StaplingUnknown {
		act := Action{Action: ActRebuild, Target: r.Layout.HTTPDConf, WouldChange: true,
			Reason: fmt.Sprintf("%s does not include %s; rebuildhttpdconf adds it once the file exists", r.Layout.HTTPDConf, r.Layout.IncludeFile)}
		if r.Layout.Kind == apacheconf.KindEA3 {
			act = Action{Action: ActWireInclude, Target: r.Layout.HTTPDConf, WouldChange: false,
				Reason: fmt.Sprintf("%s does not include %s; add the Include by hand (EA3)", r.Layout.HTTPDConf, r.Layout.IncludeFile)}
		}
		r.Actions = append(r.Actions, act)
		warnings = append(warnings, "the pre-VirtualHost include is not wired into httpd.conf")
	}
	if eff == apacheconf.StaplingMixed && len(facts.Overrides) > 0 {
		// Our own exemptions (Must-Staple vhosts kept on by design) are not overrides to review.
		for _, o := range r.Stapling.Overrides {
			if o.Value == "on" && !strings.HasSuffix(o.File, "/"+apacheconf.ExemptFileName) {
				r.Actions = append(r.Actions, Action{Action: ActReviewOverride, Target: fmt.Sprintf("%s:%d", o.File, o.Line), WouldChange: false,
					Reason: fmt.Sprintf("vhost %s turns stapling on itself; the global fix does not reach it", o.VHost)})
			}
		}
		warnings = append(warnings, "stapling is off globally but some SSL vhosts turn it back on")
	}
	if eff == apacheconf.StaplingUnknown {
		warnings = append(warnings, "the Apache config could not be read")
	}
	if f.AfterRemediation > 0 {
		warnings = append(warnings, fmt.Sprintf("%d failures after our remediation: the fix is not effective", f.AfterRemediation))
		r.Actions = append(r.Actions, Action{Action: ActInvestigate, Target: r.Layout.IncludeFile, WouldChange: false,
			Reason: "failures continued after stapling was turned off; look for vhosts or includes that turn it back on"})
	}

	var sb strings.Builder
	if f.Total == 0 {
		fmt.Fprintf(&sb, "no OCSP responder failures in the last %s", policy.ShortDuration(o.Since))
	} else {
		fmt.Fprintf(&sb, "%d OCSP responder failure%s in the last %s (max %d in %s, threshold %d)",
			f.Total, plural(f.Total), policy.ShortDuration(o.Since), f.MaxInWindow, r.Policy.Window, r.Policy.Threshold)
		// The responder named with the top cause is the top one among that cause's failures,
		// not among all of them.
		cause := top(f.ByCause)
		resp := top(r.pairs[cause])
		fmt.Fprintf(&sb, ", mostly %s", cause)
		if resp != "unknown" {
			fmt.Fprintf(&sb, " to %s", resp)
		}
	}
	fmt.Fprintf(&sb, "; stapling is %s", eff)
	if r.Stapling.ManagedBlock {
		sb.WriteString(" (stapling-agent block present)")
	}

	switch dec.Kind {
	case policy.Act, policy.DryRun:
		r.Status = Critical
		sb.WriteString(": the daemon would turn it off")
	case policy.Refused, policy.Cooldown, policy.MaxPerDay, policy.Paused:
		// An outage now, stapling on, and the daemon will not fix it: a person must.
		r.Status = Critical
		fmt.Fprintf(&sb, ": the daemon would not act (%s)", dec.Kind)
	case policy.ScopedOut:
		// A confirmed outage, but of responders only a few vhosts (or one account) use: the
		// server as a whole is fine, and the fix is per vhost, an admin's.
		r.Status = Warning
		fmt.Fprintf(&sb, "; %s", dec.Reason)
	case policy.NotCorroborated:
		r.Status = Warning
		sb.WriteString("; the log shows failures, but the responders answer from this host now: the daemon would not act")
	case policy.NotClientFacing:
		// Visitors reach the front end; only clients that reach Apache's backend port
		// directly met these failures. Worth knowing, not an outage of the sites.
		r.Status = Warning
		fmt.Fprintf(&sb, "; but %s answers on the HTTPS port, not Apache: these are Apache's backend failures (clients reaching its port directly), and the daemon would not restart Apache for them", r.FrontEnd.Server)
	case policy.NotEffective:
		r.Status = Warning
		if f.AfterRemediation == 0 {
			warnings = append(warnings, "stapling is already off in the include, yet failures continue")
		}
	default:
		r.Status = OK
		if (f.Total > 0 && eff == apacheconf.StaplingOn) || len(warnings) > 0 {
			r.Status = Warning
		}
		if r.Policy.ReachedAt != nil && eff == apacheconf.StaplingOn {
			fmt.Fprintf(&sb, "; the threshold was reached at %s, but not within the last %s", r.Policy.ReachedAt.Format(time.RFC3339), r.Policy.Window)
		}
	}
	for _, w := range warnings {
		sb.WriteString("; " + w)
	}
	if r.Policy.Paused {
		// Said whatever the decision, so a fleet's reports show which hosts are paused.
		fmt.Fprintf(&sb, "; the daemon is paused: %s exists (it decides and reports, never acts)", r.Policy.PauseFile)
	}
	if n := len(r.Stapling.Exempted); n > 0 {
		fmt.Fprintf(&sb, "; stapling kept on for %d Must-Staple vhost%s by stapling-agent's exemption (%s)", n, plural(n), strings.Join(r.Stapling.Exempted, ", "))
	}
	r.frontEndSummary(&sb)
	if r.WHM != nil && r.WHM.Differs {
		// Which wins and why; not a problem in itself (after our fix WHM shows On by design).
		sb.WriteString("; " + r.WHM.Explanation)
	}
	r.Summary = sb.String()
}

// frontEndSummary says what the front end means for the status: NGINX's own failures are a
// warning (staples may expire, handshakes are not stalled); behind LiteSpeed or another
// server the agent cannot see what visitors get, so an otherwise clean audit is unknown,
// never OK.
func (r *Report) frontEndSummary(sb *strings.Builder) {
	fe := r.FrontEnd
	if fe == nil || fe.ClientFacing {
		return
	}
	switch {
	case r.Nginx != nil:
		n := r.Nginx
		if n.Failures.Total > 0 {
			if r.Status == OK {
				r.Status = Warning
			}
			fmt.Fprintf(sb, "; NGINX (in front) logged %d OCSP failure%s (mostly %s); it staples asynchronously, so its handshakes are not stalled, but staples expire if the outage lasts",
				n.Failures.Total, plural(n.Failures.Total), top(n.Failures.ByCause))
		} else {
			fmt.Fprintf(sb, "; NGINX answers on the HTTPS port (%d of %d SSL servers staple), no OCSP failures in its error log", n.StaplingServers, n.SSLServers)
		}
		if n.ConfigError != "" || n.LogError != "" {
			if r.Status == OK {
				r.Status = Warning
			}
			sb.WriteString("; NGINX could not be read fully: " + strings.TrimPrefix(n.ConfigError+"; "+n.LogError, "; "))
		}
	default:
		if r.Status == OK || r.Status == Warning {
			r.Status = Unknown
		}
		sb.WriteString("; " + fe.Note)
	}
}

// top is the key with the highest count (ties: alphabetical), "" for an empty map.
func top(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) == 0 {
		return ""
	}
	return escape.Line(keys[0])
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
