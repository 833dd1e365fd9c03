package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/stapling-agent/stapling-agent/agent/escape"
	"github.com/stapling-agent/stapling-agent/agent/frontend"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// Format is an output format of the audit.
type Format string

const (
	Text       Format = "text"
	JSON       Format = "json"
	Nagios     Format = "nagios"
	Prometheus Format = "prometheus"
)

// Formats are the audit's output formats, in the order the help lists them.
var Formats = []Format{Text, JSON, Nagios, Prometheus}

// ParseFormat accepts one of Formats.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("unknown --format %q: use %s", s, strings.Join(names, ", "))
}

// Render writes the report in format.
func Render(w io.Writer, r *Report, format Format) error {
	switch format {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case Nagios:
		return renderNagios(w, r)
	case Prometheus:
		return renderPrometheus(w, r)
	case Text:
		return renderText(w, r)
	}
	_, err := ParseFormat(string(format))
	return err
}

// renderNagios follows the plugin API: first line "SERVICE STATUS - text | perfdata", then
// detail lines (FACTS.md section 9). Every line goes through nagiosText: a "|" anywhere, in
// the first line or a detail line, would start perfdata early, and the summary, responders,
// reasons and errors carry text from error_log and certificates.
func renderNagios(w io.Writer, r *Report) error {
	f := r.Failures
	fmt.Fprintf(w, "STAPLING %s - %s | %s\n", strings.ToUpper(string(r.Status)), nagiosText(prose(r.Summary)), nagiosPerfdata(r))
	line := func(format string, args ...any) {
		fmt.Fprintln(w, nagiosText(fmt.Sprintf(format, args...)))
	}
	line("layout: %s; include %s (wired: %s); error_log %s", r.Layout.Kind, path(r.Layout.IncludeFile), yesNo(r.Layout.IncludeWired), path(r.Layout.ErrorLog))
	global := r.Stapling.Global
	if global == "" {
		global = "unset"
	}
	line("stapling: effective %s, global %s, stapling-agent block %s", r.Stapling.Effective, name(global), yesNo(r.Stapling.ManagedBlock))
	if wh := r.WHM; wh != nil {
		switch {
		case wh.Error != "":
			line("whm: SSL Use Stapling unknown: %s", prose(wh.Error))
		case wh.Differs:
			line("whm: SSL Use Stapling shows %s, which does not win: %s", name(wh.Shown), prose(wh.Explanation))
		default:
			line("whm: SSL Use Stapling shows %s", name(wh.Shown))
		}
	}
	if fe := r.FrontEnd; fe != nil && !fe.ClientFacing {
		line("frontend: %s answers on the HTTPS port; Apache's failures are its backend's (%d)", name(string(fe.Server)), f.BackendOnly)
		if n := r.Nginx; n != nil {
			line("nginx: %d OCSP failures (by cause: %s); %s", n.Failures.Total, counts(n.Failures.ByCause, len(n.Failures.ByCause)), prose(n.Remediation))
		}
	}
	if f.Total > 0 {
		line("failures by cause: %s; by responder: %s", counts(f.ByCause, len(f.ByCause)), counts(f.ByResponder, maxListed))
		// The policy threshold is here, not in the perfdata (see nagiosPerfdata).
		line("policy: threshold %d failures within %s; the daemon would decide %s", r.Policy.Threshold, name(r.Policy.Window), r.Policy.Decision.Kind)
	}
	for _, a := range r.Actions {
		line("action: %s %s: %s", a.Action, path(a.Target), prose(a.Reason))
	}
	for _, c := range r.Checks {
		if c.Status != "ok" {
			line("check %s failed: %s", c.Name, prose(c.Error))
		}
	}
	return nil
}

// nagiosPerfdata is the first line's perfdata, 'label'=value[UOM];warn;crit;min;max (the
// plugin guidelines, FACTS.md section 9). Only status carries thresholds, and they give the
// plugin's own state: warn 0 and crit 1 (ranges 0:0 and 0:1, so 1 is WARNING and 2
// CRITICAL), U when the state is UNKNOWN, so a reader that computes the state from the
// thresholds gets the exit code. The counts carry none, because the state is not a function of
// any one of them: the same max_in_window is CRITICAL with stapling on and the daemon unable
// to act, OK on a host our block already fixed, and WARNING when the responders answer now;
// one failure is WARNING with stapling on and OK with it off. Thresholds on them would
// contradict the exit code (issue 15), so they are for graphs: min 0, no warn, crit or max.
// A count is U when the error log was not read to the end (unreadable, out of time, or the
// audit stopped before it): 0 would claim a clean log.
func nagiosPerfdata(r *Report) string {
	status := "U"
	if r.Status != Unknown {
		status = fmt.Sprint(r.Status.Code())
	}
	count := func(n int) string {
		if !r.logRead() {
			return "U"
		}
		return fmt.Sprint(n)
	}
	f := r.Failures
	return fmt.Sprintf("status=%s;0;1;0;2 failures=%s;;;0; max_in_window=%s;;;0; after_remediation=%s;;;0;",
		status, count(f.Total), count(f.MaxInWindow), count(f.AfterRemediation))
}

// logRead: the error log was read to the end, so the failure counts are the log's. The audit
// records the error_log check only once it reads the log (an unknown layout, a config Apache
// disagrees with or no error log path stop it before), and records it failed when the reading
// did (unreadable, --timeout, a signal).
func (r *Report) logRead() bool {
	read := false
	for _, c := range r.Checks {
		if c.Name == CheckErrorLog {
			if c.Status != "ok" {
				return false
			}
			read = true
		}
	}
	return read
}

// RenderNagiosUnknown is the plugin's answer when it cannot audit at all (a usage or flag
// error, a bad --root): one UNKNOWN line for exit code 3, the plugin guidelines' "usage
// errors are UNKNOWN" (FACTS.md section 16), without perfdata: nothing was measured.
func RenderNagiosUnknown(w io.Writer, reason string) error {
	_, err := fmt.Fprintf(w, "STAPLING UNKNOWN - %s\n", nagiosText(prose(reason)))
	return err
}

// nagiosText is text for a Nagios line: one line, no "|" (which would start perfdata).
func nagiosText(s string) string { return strings.ReplaceAll(escape.Line(s), "|", "/") }

// renderPrometheus writes the text exposition format without timestamps, for node_exporter's
// textfile collector.
func renderPrometheus(w io.Writer, r *Report) error {
	metric := func(name, help, typ string) {
		fmt.Fprintf(w, "# HELP stapling_agent_%s %s\n# TYPE stapling_agent_%s %s\n", name, help, name, typ)
	}
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	metric("audit_status", "Audit status: 0 ok, 1 warning, 2 critical, 3 unknown.", "gauge")
	fmt.Fprintf(w, "stapling_agent_audit_status %d\n", r.Status.Code())
	metric("audit_timestamp_seconds", "When the audit ran.", "gauge")
	fmt.Fprintf(w, "stapling_agent_audit_timestamp_seconds %d\n", r.GeneratedAt.Unix())
	// The name the alerting rules' "stale audit" uses: time() minus it is the audit's age.
	metric("last_audit_timestamp_seconds", "When the last audit ran (Unix time), for staleness alerts.", "gauge")
	fmt.Fprintf(w, "stapling_agent_last_audit_timestamp_seconds %d\n", r.GeneratedAt.Unix())
	metric("audit_window_seconds", "Length of the audited window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_audit_window_seconds %g\n", r.Window.Until.Sub(r.Window.Since).Seconds())
	metric("info", "Agent version and host layout.", "gauge")
	fmt.Fprintf(w, "stapling_agent_info{version=%s,layout=%s} 1\n", label(r.AgentVersion), label(string(r.Layout.Kind)))
	metric("check_success", "Whether each part of the audit could be read.", "gauge")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "stapling_agent_check_success{check=%s} %d\n", label(string(c.Name)), b(c.Status == "ok"))
	}
	metric("responder_failures", "OCSP responder failures (AH01941) in the window, by cause.", "gauge")
	// Causes are logwatch's closed set: no bound needed.
	for _, k := range ranked(r.Failures.ByCause) {
		fmt.Fprintf(w, "stapling_agent_responder_failures{cause=%s} %d\n", label(k), r.Failures.ByCause[k])
	}
	metric("responder_failures_by_responder", "OCSP responder failures in the window, by responder as logged.", "gauge")
	top, other := topResponders(r.Failures.ByResponder)
	for _, s := range top {
		fmt.Fprintf(w, "stapling_agent_responder_failures_by_responder{responder=%s} %d\n", label(s.responder), s.n)
	}
	if other > 0 {
		fmt.Fprintf(w, "stapling_agent_responder_failures_by_responder{responder=%s} %d\n", label(otherResponders), other)
	}
	metric("responder_failures_total_in_window", "All OCSP responder failures in the window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_responder_failures_total_in_window %d\n", r.Failures.Total)
	metric("max_failures_in_policy_window", "Most failures within any policy window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_max_failures_in_policy_window %d\n", r.Failures.MaxInWindow)
	metric("failures_after_remediation", "Failures logged after stapling-agent's last remediation.", "gauge")
	fmt.Fprintf(w, "stapling_agent_failures_after_remediation %d\n", r.Failures.AfterRemediation)
	metric("policy_would_act", "Whether the daemon's policy threshold was reached in the window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_policy_would_act %d\n", b(r.Policy.WouldAct))
	metric("certificate_events", "Certificate status lines (revoked, unknown, invalid response) in the window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_certificate_events %d\n", r.CertificateEvents.Total)
	metric("init_events", "Start-up lines for certificates without an OCSP URL in the window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_init_events %d\n", r.InitEvents.Total)
	metric("stapling_effective", "Effective OCSP stapling: 1 for the current state.", "gauge")
	for _, s := range []apacheconf.Stapling{apacheconf.StaplingOn, apacheconf.StaplingOff, apacheconf.StaplingMixed, apacheconf.StaplingUnknown} {
		fmt.Fprintf(w, "stapling_agent_stapling_effective{state=%s} %d\n", label(string(s)), b(r.Stapling.Effective == s))
	}
	metric("managed_block", "Whether stapling-agent's block is in the include.", "gauge")
	fmt.Fprintf(w, "stapling_agent_managed_block %d\n", b(r.Stapling.ManagedBlock))
	metric("include_wired", "Whether httpd.conf reads the pre-VirtualHost include.", "gauge")
	fmt.Fprintf(w, "stapling_agent_include_wired %d\n", b(r.Layout.IncludeWired))
	metric("log_bytes_scanned", "Bytes of error_log read by the audit.", "gauge")
	fmt.Fprintf(w, "stapling_agent_log_bytes_scanned %d\n", r.Log.BytesScanned)
	metric("log_lines_scanned", "Lines of error_log read by the audit.", "gauge")
	fmt.Fprintf(w, "stapling_agent_log_lines_scanned %d\n", r.Log.LinesScanned)
	metric("log_skipped_lines", "Lines over 64 KiB skipped by the audit.", "gauge")
	fmt.Fprintf(w, "stapling_agent_log_skipped_lines %d\n", r.Log.SkippedLines)
	if fe := r.FrontEnd; fe != nil {
		metric("frontend", "Who answers on the HTTPS port: 1 for the server detected.", "gauge")
		for _, s := range []frontend.Server{frontend.ServerApache, frontend.ServerNginx, frontend.ServerLiteSpeed, frontend.ServerOther, frontend.ServerUnknown} {
			fmt.Fprintf(w, "stapling_agent_frontend{server=%s} %d\n", label(string(s)), b(fe.Server == s))
		}
		metric("backend_only_failures", "Apache's responder failures in the window while another server answers on the HTTPS port.", "gauge")
		fmt.Fprintf(w, "stapling_agent_backend_only_failures %d\n", r.Failures.BackendOnly)
	}
	if n := r.Nginx; n != nil {
		metric("nginx_ocsp_failures", "NGINX's OCSP failures in the window (it staples asynchronously), by cause.", "gauge")
		for _, k := range ranked(n.Failures.ByCause) {
			fmt.Fprintf(w, "stapling_agent_nginx_ocsp_failures{cause=%s} %d\n", label(k), n.Failures.ByCause[k])
		}
		metric("nginx_ocsp_failures_by_responder", "NGINX's OCSP failures in the window, by responder.", "gauge")
		top, other := topResponders(n.Failures.ByResponder)
		for _, s := range top {
			fmt.Fprintf(w, "stapling_agent_nginx_ocsp_failures_by_responder{responder=%s} %d\n", label(s.responder), s.n)
		}
		if other > 0 {
			fmt.Fprintf(w, "stapling_agent_nginx_ocsp_failures_by_responder{responder=%s} %d\n", label(otherResponders), other)
		}
	}
	if wh := r.WHM; wh != nil {
		metric("whm_differs", "Whether WHM's SSL Use Stapling switch differs from the effective stapling.", "gauge")
		fmt.Fprintf(w, "stapling_agent_whm_differs %d\n", b(wh.Differs))
	}
	return nil
}

// maxSeries bounds stapling_agent_responder_failures_by_responder: every responder name a
// tenant's certificate names (or a forged log line) would otherwise be a new series.
const maxSeries = 10

// otherResponders labels the sum of the responders beyond the top maxSeries.
const otherResponders = "other"

type responderCount struct {
	responder string // as labelText makes it
	n         int
}

// topResponders is the maxSeries responders with the most failures (ties by name) and the sum
// of the rest. Names are counted as their label values: two long names that clip to the same
// value, or a responder that calls itself "other", must not make a duplicate series, which
// would make node_exporter's textfile collector drop the whole file (FACTS.md section 16).
func topResponders(m map[string]int) (top []responderCount, other int) {
	byLabel := map[string]int{}
	for k, n := range m {
		byLabel[labelText(k)] += n
	}
	other = byLabel[otherResponders]
	delete(byLabel, otherResponders)
	for i, k := range ranked(byLabel) {
		if i < maxSeries {
			top = append(top, responderCount{k, byLabel[k]})
		} else {
			other += byLabel[k]
		}
	}
	return top, other
}

// labelText is v as a label value may hold it: valid UTF-8 (the exposition format requires
// it; invalid bytes become U+FFFD) and at most maxValue bytes.
func labelText(v string) string { return clip(strings.ToValidUTF8(v, "\uFFFD")) }

// label is a quoted label value as the exposition format escapes it: only backslash, double
// quote and newline (Go's %q escapes more, and node_exporter's textfile collector then drops
// the whole file).
func label(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(labelText(v)) + `"`
}

// renderText is the report for people on a terminal. Every field that can hold text from
// error_log, certificates or the host's config goes through name, path or prose, which escape
// it onto one line and bound it.
func renderText(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "stapling-agent audit of %s: %s\n", name(r.Host), strings.ToUpper(string(r.Status)))
	fmt.Fprintf(w, "  %s\n\n", prose(r.Summary))
	fmt.Fprintf(w, "layout        %s\n", name(string(r.Layout.Kind)))
	if r.Layout.Kind != apacheconf.KindUnknown {
		fmt.Fprintf(w, "httpd.conf    %s\n", path(r.Layout.HTTPDConf))
		switch {
		case r.Apache.Asked:
			asked := "-v -l -M -S and -t -D DUMP_CONFIG"
			if !r.Apache.DumpConfig {
				asked = "-v -l -M -S; not DUMP_CONFIG, mod_info is not loaded"
			}
			verdict := "the agent's reading agrees"
			if r.Apache.Disagreement != "" {
				verdict = "the agent's reading DISAGREES: " + prose(r.Apache.Disagreement)
			}
			fmt.Fprintf(w, "apache        %s asked (%s): %s\n", name(r.Apache.Version), asked, verdict)
		case r.Apache.Error != "":
			fmt.Fprintf(w, "apache        %s\n", prose(r.Apache.Error))
		}
		fmt.Fprintf(w, "include       %s (wired: %s, stapling-agent block: %s)\n", path(r.Layout.IncludeFile), yesNo(r.Layout.IncludeWired), yesNo(r.Stapling.ManagedBlock))
		global := r.Stapling.Global
		if global == "" {
			global = "unset (Apache default: off)"
		}
		fmt.Fprintf(w, "stapling      effective %s; global %s", r.Stapling.Effective, name(global))
		if r.Stapling.GlobalAt != "" {
			fmt.Fprintf(w, " at %s", path(r.Stapling.GlobalAt))
		}
		fmt.Fprintln(w)
		// cPanel writes `SSLUseStapling off` into every vhost whose certificate has no OCSP URL
		// (on an AutoSSL-only host, every vhost): those are counted; the vhosts that turn
		// stapling back on, which the global fix does not reach, are each listed.
		off := 0
		for _, o := range r.Stapling.Overrides {
			if o.Value == "off" {
				off++
				continue
			}
			why := ""
			if strings.HasSuffix(o.File, "/"+apacheconf.ExemptFileName) {
				why = " (stapling-agent's Must-Staple exemption)"
			}
			fmt.Fprintf(w, "  vhost %s sets SSLUseStapling %s at %s:%d%s\n", name(o.VHost), name(o.Value), path(o.File), o.Line, why)
		}
		if off > 0 {
			fmt.Fprintf(w, "  %d vhost%s set SSLUseStapling off themselves (cPanel does so for certificates without an OCSP URL)\n", off, plural(off))
		}
		if wh := r.WHM; wh != nil {
			fmt.Fprintf(w, "whm           SSL Use Stapling shows %s (%s)", name(wh.Shown), path(wh.File))
			switch {
			case wh.Error != "":
				fmt.Fprintf(w, ": %s", prose(wh.Error))
			case wh.Differs:
				fmt.Fprintf(w, ": %s", prose(wh.Explanation))
			}
			fmt.Fprintln(w)
		}
		if fe := r.FrontEnd; fe != nil {
			fmt.Fprintf(w, "frontend      %s on the HTTPS port", name(string(fe.Server)))
			if len(fe.ApachePorts) > 0 {
				fmt.Fprintf(w, "; Apache on %s", name(fmt.Sprint(fe.ApachePorts)))
			}
			if fe.Note != "" {
				fmt.Fprintf(w, ": %s", prose(fe.Note))
			}
			fmt.Fprintln(w)
			for i, ev := range fe.Evidence {
				if i == 3 {
					fmt.Fprintf(w, "  (%d more)\n", len(fe.Evidence)-3)
					break
				}
				fmt.Fprintf(w, "  %s\n", prose(ev))
			}
		}
		if n := r.Nginx; n != nil {
			fmt.Fprintf(w, "nginx         %d of %d SSL servers staple; %d OCSP failure%s in its error log", n.StaplingServers, n.SSLServers, n.Failures.Total, plural(n.Failures.Total))
			if n.Failures.Total > 0 {
				fmt.Fprintf(w, " (by cause %s; by responder %s)", counts(n.Failures.ByCause, len(n.Failures.ByCause)), counts(n.Failures.ByResponder, maxListed))
			}
			fmt.Fprintf(w, "\n  %s\n", prose(n.Remediation))
		}
		fmt.Fprintf(w, "error_log     %s (%d file%s, %s, %d lines, %d skipped)\n", path(r.Layout.ErrorLog), len(r.Log.Files), plural(len(r.Log.Files)), humanBytes(r.Log.BytesScanned), r.Log.LinesScanned, r.Log.SkippedLines)
		fmt.Fprintf(w, "window        %s to %s\n", r.Window.Since.Format(time.RFC3339), r.Window.Until.Format(time.RFC3339))
	}
	f := r.Failures
	if f.Total > 0 {
		fmt.Fprintf(w, "failures      %d (max %d in %s; threshold %d; daemon would act: %s)\n", f.Total, f.MaxInWindow, name(r.Policy.Window), r.Policy.Threshold, yesNo(r.Policy.WouldAct))
		fmt.Fprintf(w, "  by cause      %s\n  by responder  %s\n", counts(f.ByCause, len(f.ByCause)), counts(f.ByResponder, maxListed))
		if f.BackendOnly > 0 {
			fmt.Fprintf(w, "  backend only  %d (another server answers on the HTTPS port; these met only clients reaching Apache directly)\n", f.BackendOnly)
		}
		if f.First != nil && f.Last != nil {
			fmt.Fprintf(w, "  first %s, last %s\n", f.First.Format(time.RFC3339), f.Last.Format(time.RFC3339))
		}
	}
	if n := r.CertificateEvents.Total; n > 0 {
		fmt.Fprintf(w, "certificate   %d status problems (%s): not an outage, stapling off does not fix them\n", n, counts(r.CertificateEvents.ByCode, len(r.CertificateEvents.ByCode)))
	}
	if n := r.InitEvents.Total; n > 0 {
		fmt.Fprintf(w, "start-up      %d lines for certificates without an OCSP URL (%s)\n", n, counts(r.InitEvents.ByCode, len(r.InitEvents.ByCode)))
	}
	if d := r.Policy.Decision; d.Kind != policy.None {
		fmt.Fprintf(w, "daemon        would decide %s: %s\n", d.Kind, prose(d.Reason))
	}
	for _, a := range r.Actions {
		fmt.Fprintf(w, "action        %s %s: %s\n", a.Action, path(a.Target), prose(a.Reason))
	}
	for _, c := range r.Checks {
		if c.Status != "ok" {
			fmt.Fprintf(w, "check         %s failed: %s\n", c.Name, prose(c.Error))
		}
	}
	return nil
}

// Bounds on what a tenant can make the text and Nagios output print.
const (
	// maxValue is the longest name or value printed whole: host names and host:port
	// responders are far shorter (a DNS name is at most 253 bytes, and responders in the
	// wild are under 64); longer ones are cut and say how long they were.
	maxValue = 128
	// maxProse is the longest sentence (summary, reason, error) printed whole; the
	// summary's legitimate clauses stay under 500 bytes. It also keeps the Nagios first
	// line, and with it the perfdata, far below Nagios's output limit (8 KiB in all).
	maxProse = 1024
	// maxListed is how many responders the text and Nagios lists name; the rest are
	// counted ("and N more"). JSON has them all.
	maxListed = 5
)

// clip cuts s to at most maxValue bytes at a UTF-8 boundary, ending in "…(N bytes)" with
// s's length when it cuts.
func clip(s string) string { return clipAt(s, maxValue) }

func clipAt(s string, max int) string {
	if len(s) <= max {
		return s
	}
	mark := fmt.Sprintf("…(%d bytes)", len(s))
	i := max - len(mark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}

// name is a name or value (host, responder, vhost) for one line: cut, then escaped.
func name(s string) string { return escape.Line(clip(s)) }

// path is a host path for one line. Paths come from the host's own config, not a tenant, so
// they are escaped (cheap) but not cut.
func path(s string) string { return escape.Line(s) }

// prose is a sentence (summary, reason, error) for one line: each word longer than maxValue
// (a responder name or certificate text quoted in it) is cut, the whole is escaped and cut at
// maxProse bytes.
func prose(s string) string {
	words := strings.Split(s, " ")
	for i, w := range words {
		words[i] = clip(w)
	}
	return clipAt(escape.Line(strings.Join(words, " ")), maxProse)
}

// ranked is m's keys by count, highest first, ties by key.
func ranked(m map[string]int) []string {
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
	return keys
}

// counts lists "key=n" for the limit keys with the highest counts, each cut and escaped, and
// says how many more there are.
func counts(m map[string]int, limit int) string {
	keys := ranked(m)
	var parts []string
	for i, k := range keys {
		if i == limit {
			break
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name(k), m[k]))
	}
	s := strings.Join(parts, ", ")
	if more := len(keys) - limit; more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
