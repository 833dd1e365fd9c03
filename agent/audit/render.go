package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/escape"
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
// detail lines (FACTS.md section 9).
func renderNagios(w io.Writer, r *Report) error {
	f := r.Failures
	// The summary can name responders from log lines; a "|" would start the perfdata early.
	fmt.Fprintf(w, "STAPLING %s - %s | failures=%d;1;%d;0; max_in_window=%d;;;0;\n",
		strings.ToUpper(string(r.Status)), strings.ReplaceAll(escape.Line(r.Summary), "|", "/"), f.Total, r.Policy.Threshold, f.MaxInWindow)
	fmt.Fprintf(w, "layout: %s; include %s (wired: %s); error_log %s\n", r.Layout.Kind, r.Layout.IncludeFile, yesNo(r.Layout.IncludeWired), r.Layout.ErrorLog)
	global := r.Stapling.Global
	if global == "" {
		global = "unset"
	}
	fmt.Fprintf(w, "stapling: effective %s, global %s, stapling-agent block %s\n", r.Stapling.Effective, global, yesNo(r.Stapling.ManagedBlock))
	if f.Total > 0 {
		fmt.Fprintf(w, "failures by cause: %s; by responder: %s\n", nagiosText(counts(f.ByCause)), nagiosText(counts(f.ByResponder)))
	}
	for _, a := range r.Actions {
		fmt.Fprintf(w, "action: %s %s: %s\n", a.Action, a.Target, nagiosText(a.Reason))
	}
	for _, c := range r.Checks {
		if c.Status != "ok" {
			fmt.Fprintf(w, "check %s failed: %s\n", c.Name, nagiosText(c.Error))
		}
	}
	return nil
}

// nagiosText is text for a Nagios detail line: one line, no "|" (which would start perfdata).
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
	metric("audit_window_seconds", "Length of the audited window.", "gauge")
	fmt.Fprintf(w, "stapling_agent_audit_window_seconds %g\n", r.Window.Until.Sub(r.Window.Since).Seconds())
	metric("info", "Agent version and host layout.", "gauge")
	fmt.Fprintf(w, "stapling_agent_info{version=%s,layout=%s} 1\n", label(r.AgentVersion), label(string(r.Layout.Kind)))
	metric("check_success", "Whether each part of the audit could be read.", "gauge")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "stapling_agent_check_success{check=%s} %d\n", label(string(c.Name)), b(c.Status == "ok"))
	}
	metric("responder_failures", "OCSP responder failures (AH01941) in the window, by cause.", "gauge")
	for _, k := range sortedKeys(r.Failures.ByCause) {
		fmt.Fprintf(w, "stapling_agent_responder_failures{cause=%s} %d\n", label(k), r.Failures.ByCause[k])
	}
	metric("responder_failures_by_responder", "OCSP responder failures in the window, by responder as logged.", "gauge")
	for _, k := range sortedKeys(r.Failures.ByResponder) {
		fmt.Fprintf(w, "stapling_agent_responder_failures_by_responder{responder=%s} %d\n", label(k), r.Failures.ByResponder[k])
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
	return nil
}

// label is a quoted label value as the exposition format escapes it: only backslash, double
// quote and newline (Go's %q escapes more, and node_exporter's textfile collector then drops
// the whole file).
func label(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

func renderText(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "stapling-agent audit of %s: %s\n", escape.Line(r.Host), strings.ToUpper(string(r.Status)))
	fmt.Fprintf(w, "  %s\n\n", escape.Line(r.Summary))
	fmt.Fprintf(w, "layout        %s\n", r.Layout.Kind)
	if r.Layout.Kind != apacheconf.KindUnknown {
		fmt.Fprintf(w, "httpd.conf    %s\n", r.Layout.HTTPDConf)
		fmt.Fprintf(w, "include       %s (wired: %s, stapling-agent block: %s)\n", r.Layout.IncludeFile, yesNo(r.Layout.IncludeWired), yesNo(r.Stapling.ManagedBlock))
		global := r.Stapling.Global
		if global == "" {
			global = "unset (Apache default: off)"
		}
		fmt.Fprintf(w, "stapling      effective %s; global %s", r.Stapling.Effective, global)
		if r.Stapling.GlobalAt != "" {
			fmt.Fprintf(w, " at %s", r.Stapling.GlobalAt)
		}
		fmt.Fprintln(w)
		for _, o := range r.Stapling.Overrides {
			fmt.Fprintf(w, "  vhost %s sets SSLUseStapling %s at %s:%d\n", escape.Line(o.VHost), o.Value, o.File, o.Line)
		}
		fmt.Fprintf(w, "error_log     %s (%d file%s, %s, %d lines, %d skipped)\n", r.Layout.ErrorLog, len(r.Log.Files), plural(len(r.Log.Files)), humanBytes(r.Log.BytesScanned), r.Log.LinesScanned, r.Log.SkippedLines)
		fmt.Fprintf(w, "window        %s to %s\n", r.Window.Since.Format(time.RFC3339), r.Window.Until.Format(time.RFC3339))
	}
	f := r.Failures
	if f.Total > 0 {
		fmt.Fprintf(w, "failures      %d (max %d in %s; threshold %d; daemon would act: %s)\n", f.Total, f.MaxInWindow, r.Policy.Window, r.Policy.Threshold, yesNo(r.Policy.WouldAct))
		fmt.Fprintf(w, "  by cause      %s\n  by responder  %s\n", escape.Line(counts(f.ByCause)), escape.Line(counts(f.ByResponder)))
		fmt.Fprintf(w, "  first %s, last %s\n", f.First.Format(time.RFC3339), f.Last.Format(time.RFC3339))
	}
	if n := r.CertificateEvents.Total; n > 0 {
		fmt.Fprintf(w, "certificate   %d status problems (%s): not an outage, stapling off does not fix them\n", n, counts(r.CertificateEvents.ByCode))
	}
	if n := r.InitEvents.Total; n > 0 {
		fmt.Fprintf(w, "start-up      %d lines for certificates without an OCSP URL (%s)\n", n, counts(r.InitEvents.ByCode))
	}
	if d := r.Policy.Decision; d.Kind != policy.None {
		fmt.Fprintf(w, "daemon        would decide %s: %s\n", d.Kind, escape.Line(d.Reason))
	}
	for _, a := range r.Actions {
		fmt.Fprintf(w, "action        %s %s: %s\n", a.Action, a.Target, escape.Line(a.Reason))
	}
	for _, c := range r.Checks {
		if c.Status != "ok" {
			fmt.Fprintf(w, "check         %s failed: %s\n", c.Name, escape.Line(c.Error))
		}
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
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
