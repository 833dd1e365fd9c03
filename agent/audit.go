package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

// AuditSchema versions the JSON. Fields are only ever added within v1.
const AuditSchema = "stapling-agent/audit/v1"

// Audit statuses, in the Nagios convention; the exit code is the index.
const (
	StatusOK       = "ok"
	StatusWarning  = "warning"
	StatusCritical = "critical"
	StatusUnknown  = "unknown"
)

var statusCode = map[string]int{StatusOK: 0, StatusWarning: 1, StatusCritical: 2, StatusUnknown: 3}

// AuditReport is the audit's result; its JSON form is documented in the README.
type AuditReport struct {
	Schema       string    `json:"schema"`
	Host         string    `json:"host"`
	GeneratedAt  time.Time `json:"generated_at"`
	AgentVersion string    `json:"agent_version"`
	Status       string    `json:"status"`
	Summary      string    `json:"summary"`

	Layout struct {
		Kind           string `json:"kind"`
		HTTPDConf      string `json:"httpd_conf"`
		IncludeFile    string `json:"include_file"`
		IncludeWired   bool   `json:"include_wired"`
		ErrorLog       string `json:"error_log"`
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
	} `json:"failures"`
	CertificateEvents EventSummary `json:"certificate_events"`
	InitEvents        EventSummary `json:"init_events"`
	Stapling          struct {
		Effective     string     `json:"effective"` // on | off | mixed | unknown
		Global        string     `json:"global"`    // on | off | "" (unset: Apache's default, off)
		GlobalAt      string     `json:"global_at,omitempty"`
		ManagedBlock  bool       `json:"managed_block"`
		RemediatedAt  *time.Time `json:"remediated_at,omitempty"`
		StaplingCache string     `json:"stapling_cache"`
		Overrides     []Override `json:"overrides"`
		// MustStaple lists SSL vhosts serving Must-Staple certificates: remediation is
		// refused while stapling would be turned off for them.
		MustStaple []Override `json:"must_staple"`
	} `json:"stapling"`
	Policy struct {
		Threshold int        `json:"threshold"`
		Window    string     `json:"window"`
		WouldAct  bool       `json:"would_act"`
		ReachedAt *time.Time `json:"reached_at"`
	} `json:"policy"`
	Actions []Action `json:"actions"`
	// Checks say which parts of the audit worked, like node_exporter's scrape_collector_success.
	Checks []Check `json:"checks"`
	// Probe is present with --probe.
	Probe *ProbeReport `json:"probe,omitempty"`
}

// addProbe attaches probe results; a responder failing now with the same cause the log shows
// confirms the diagnosis in the summary.
func (r *AuditReport) addProbe(p *ProbeReport) {
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
	Action      string `json:"action"`
	Target      string `json:"target"`
	WouldChange bool   `json:"would_change"`
	Reason      string `json:"reason"`
}

type Check struct {
	Name   string `json:"name"`
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

// auditInput is what the audit needs; everything is read-only.
type auditInput struct {
	root     string
	cfg      *Config
	layout   *apacheconf.Layout // nil when not detected
	layoutEr error
	state    *State
	now      time.Time
	since    time.Duration
	host     string
}

// runAudit reads the layout, the Apache config, the include, our journal and the error_log
// window, and replays the policy. It never writes and never runs a command.
func runAudit(in auditInput) *AuditReport {
	r := &AuditReport{Schema: AuditSchema, Host: in.host, GeneratedAt: in.now.UTC(), AgentVersion: AgentVersion()}
	r.Window.Since, r.Window.Until = in.now.Add(-in.since).UTC(), in.now.UTC()
	r.Failures.ByCause, r.Failures.ByResponder = map[string]int{}, map[string]int{}
	r.CertificateEvents.ByCode, r.InitEvents.ByCode = map[string]int{}, map[string]int{}
	r.CertificateEvents.Examples, r.InitEvents.Examples = []EventExample{}, []EventExample{}
	r.Log.Files, r.Stapling.Overrides, r.Actions = []string{}, []Override{}, []Action{}
	r.Stapling.MustStaple = []Override{}
	r.Policy.Threshold, r.Policy.Window = in.cfg.Policy.Threshold, shortDur(in.cfg.Policy.Window)
	r.Stapling.Effective = "unknown"

	check := func(name string, err error) bool {
		c := Check{Name: name, Status: "ok"}
		if err != nil {
			c.Status, c.Error = "error", oneLine(err.Error())
		}
		r.Checks = append(r.Checks, c)
		return err == nil
	}

	r.Layout.Kind = string(apacheconf.KindUnknown)
	if !check("layout", in.layoutEr) {
		r.Status, r.Summary = StatusUnknown, "no cPanel Apache layout found: "+oneLine(in.layoutEr.Error())
		return r
	}
	l := in.layout
	r.Layout.Kind, r.Layout.HTTPDConf, r.Layout.IncludeFile = string(l.Kind), l.HTTPDConf, l.Include
	r.Layout.ErrorLog, r.Layout.RestartCommand = l.ErrorLog, l.Restart

	// Apache config and include.
	var include []byte
	cfg, cfgErr := apacheconf.ReadConfig(l)
	if check("apache_config", cfgErr) {
		r.Layout.IncludeWired = cfg.Includes(l.Root, l.Include)
		r.Stapling.Effective, r.Stapling.Global = cfg.EffectiveStapling(), cfg.Global
		if cfg.Global != "" {
			r.Stapling.GlobalAt = fmt.Sprintf("%s:%d", cfg.GlobalAt.File, cfg.GlobalAt.Line)
		}
		r.Stapling.StaplingCache = cfg.StaplingCache
		for _, v := range cfg.Overrides() {
			r.Stapling.Overrides = append(r.Stapling.Overrides, Override{File: v.StaplingAt.File, Line: v.StaplingAt.Line, VHost: v.Name(), Value: v.Stapling})
		}
		for _, v := range cfg.VHosts {
			if !v.SSL || v.CertFile == "" {
				continue
			}
			if cf, err := loadCertFile(l.Path(v.CertFile)); err == nil && mustStaple(cf.leaf) {
				r.Stapling.MustStaple = append(r.Stapling.MustStaple, Override{File: v.File, Line: v.Line, VHost: v.Name(), Value: v.CertFile})
			}
		}
	}
	include, incErr := os.ReadFile(l.Path(l.Include))
	if errors.Is(incErr, fs.ErrNotExist) {
		incErr = nil
	}
	if check("include", incErr) {
		r.Stapling.ManagedBlock = apacheconf.InspectInclude(include).ManagedBlock
	}
	if r.Stapling.ManagedBlock {
		r.Stapling.RemediatedAt = lastRemediation(in.state, l)
	}

	// error_log window.
	pol := Policy{Threshold: in.cfg.Policy.Threshold, Window: in.cfg.Policy.Window}
	wc := newWindowCounter(pol)
	var corr logwatch.Correlator
	st, logErr := logwatch.ScanHistory(l.Path(l.ErrorLog), r.Window.Since, in.now.Add(time.Second), func(ev logwatch.Event) {
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
		r.Failures.Total++
		r.Failures.ByCause[string(f.Cause)]++
		resp := f.Responder
		if resp == "" {
			resp = "unknown"
		}
		r.Failures.ByResponder[resp]++
		t := f.Time.UTC()
		if r.Failures.First == nil {
			r.Failures.First = &t
		}
		r.Failures.Last = &t
		if r.Stapling.RemediatedAt != nil && f.Time.After(*r.Stapling.RemediatedAt) {
			r.Failures.AfterRemediation++
		}
		wc.Add(f.Time)
	})
	for _, f := range st.Files {
		r.Log.Files = append(r.Log.Files, apacheconf.Unroot(l.Root, f))
	}
	r.Log.BytesScanned, r.Log.LinesScanned, r.Log.SkippedLines = st.Bytes, st.Lines, st.Skipped
	r.Failures.MaxInWindow = wc.max
	if !wc.reached.IsZero() {
		t := wc.reached.UTC()
		r.Policy.ReachedAt, r.Policy.WouldAct = &t, true
	}
	if !check("error_log", logErr) {
		r.Status = StatusUnknown
		r.Summary = "cannot read the error log: " + oneLine(logErr.Error())
		return r
	}
	r.decide(in, include)
	return r
}

// decide sets status, summary and actions from what was read.
func (r *AuditReport) decide(in auditInput, include []byte) {
	l := in.layout
	eff := r.Stapling.Effective
	on := eff == "on" || eff == "unknown"
	f := &r.Failures
	var warnings []string

	if r.Policy.WouldAct && on {
		_, changed := apacheconf.ApplyBlock(include)
		act := Action{Action: "remediate", Target: l.Include, WouldChange: changed,
			Reason: fmt.Sprintf("%d responder failures within %s (threshold %d) while stapling is %s", f.MaxInWindow, r.Policy.Window, r.Policy.Threshold, eff)}
		if n := len(r.Stapling.MustStaple); n > 0 {
			act.WouldChange = false
			act.Reason += fmt.Sprintf("; but refused: %d vhost(s) serve Must-Staple certificates (reissue them without Must-Staple, or remediate --force)", n)
			warnings = append(warnings, "Must-Staple certificates block the automatic fix")
		}
		r.Actions = append(r.Actions, act)
	}
	if !r.Layout.IncludeWired && eff != "unknown" {
		act := Action{Action: "rebuild", Target: l.HTTPDConf, WouldChange: true,
			Reason: fmt.Sprintf("%s does not include %s; rebuildhttpdconf adds it once the file exists", l.HTTPDConf, l.Include)}
		if l.Kind == apacheconf.KindEA3 {
			act = Action{Action: "wire_include", Target: l.HTTPDConf, WouldChange: false,
				Reason: fmt.Sprintf("%s does not include %s; add the Include by hand (EA3)", l.HTTPDConf, l.Include)}
		}
		r.Actions = append(r.Actions, act)
		warnings = append(warnings, "the pre-VirtualHost include is not wired into httpd.conf")
	}
	if eff == "mixed" {
		for _, o := range r.Stapling.Overrides {
			if o.Value == "on" {
				r.Actions = append(r.Actions, Action{Action: "review_override", Target: fmt.Sprintf("%s:%d", o.File, o.Line), WouldChange: false,
					Reason: fmt.Sprintf("vhost %s turns stapling on itself; the global fix does not reach it", o.VHost)})
			}
		}
		warnings = append(warnings, "stapling is off globally but some SSL vhosts turn it back on")
	}
	if eff == "unknown" {
		warnings = append(warnings, "the Apache config could not be read")
	}
	if f.AfterRemediation > 0 {
		warnings = append(warnings, fmt.Sprintf("%d failures after our remediation: the fix is not effective", f.AfterRemediation))
		r.Actions = append(r.Actions, Action{Action: "investigate", Target: l.Include, WouldChange: false,
			Reason: "failures continued after stapling was turned off; look for vhosts or includes that turn it back on"})
	}

	var sb strings.Builder
	if f.Total == 0 {
		fmt.Fprintf(&sb, "no OCSP responder failures in the last %s", shortDur(in.since))
	} else {
		fmt.Fprintf(&sb, "%d OCSP responder failure%s in the last %s (max %d in %s, threshold %d)",
			f.Total, plural(f.Total), shortDur(in.since), f.MaxInWindow, r.Policy.Window, r.Policy.Threshold)
		cause, resp := top(f.ByCause), top(f.ByResponder)
		fmt.Fprintf(&sb, ", mostly %s", cause)
		if resp != "unknown" {
			fmt.Fprintf(&sb, " to %s", resp)
		}
	}
	fmt.Fprintf(&sb, "; stapling is %s", eff)
	if r.Stapling.ManagedBlock {
		sb.WriteString(" (stapling-agent block present)")
	}

	switch {
	case r.Policy.WouldAct && on:
		r.Status = StatusCritical
		sb.WriteString(": the daemon would turn it off")
	case (f.Total > 0 && eff == "on") || len(warnings) > 0:
		r.Status = StatusWarning
	default:
		r.Status = StatusOK
	}
	for _, w := range warnings {
		sb.WriteString("; " + w)
	}
	r.Summary = sb.String()
}

// lastRemediation is when our last remediation finished, from the journal; the include's
// mtime when the journal has none (the block was written by another host's copy, or the
// journal was removed).
func lastRemediation(st *State, l *apacheconf.Layout) *time.Time {
	entries, _ := st.Journal()
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.File == l.Include && e.Action == "remediate" && e.Step == "done" {
			t := e.Time.UTC()
			return &t
		}
	}
	if info, err := os.Stat(l.Path(l.Include)); err == nil {
		t := info.ModTime().UTC()
		return &t
	}
	return nil
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
	return keys[0]
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// shortDur prints 24h0m0s as 24h and 10m0s as 10m.
func shortDur(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	if s == "" {
		return "0s"
	}
	return s
}
