package audit

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/policy"
)

// The fleet's pause file shows in every format: the decision paused (critical: an outage the
// daemon will not fix), policy.paused in the JSON, and a clause in the summary that the text
// and Nagios outputs print, outage or not.
func TestAuditPaused(t *testing.T) {
	connect := outage(4, 5*time.Minute, "111", "AH01974", "could not connect to OCSP responder 'ocsp.example.net'")
	for _, c := range []struct {
		name   string
		log    string
		kind   policy.Kind
		status Status
	}{
		{"outage", connect, policy.Paused, Critical},
		{"quiet", "", policy.None, OK},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, e := auditFixture(t, wiredHTTPD, "", c.log)
			fakehost.Write(t, h.Root, config.DefaultPauseFile, "")
			r := runAudit(e)
			if r.Policy.Decision.Kind != c.kind || r.Status != c.status || !r.Policy.Paused || r.Policy.WouldAct {
				t.Fatalf("decision %s status %s paused %v would_act %v: %s", r.Policy.Decision.Kind, r.Status, r.Policy.Paused, r.Policy.WouldAct, r.Summary)
			}
			const clause = "the daemon is paused: /etc/stapling-agent/pause exists"
			if !strings.Contains(render(t, r, Text), clause) || !strings.Contains(render(t, r, Nagios), clause) {
				t.Fatalf("text or Nagios lacks %q:\n%s", clause, render(t, r, Text))
			}
			var doc struct {
				Policy struct {
					Paused    bool   `json:"paused"`
					PauseFile string `json:"pause_file"`
					Decision  struct {
						Kind string `json:"kind"`
					} `json:"decision"`
				} `json:"policy"`
			}
			if err := json.Unmarshal([]byte(render(t, r, JSON)), &doc); err != nil || !doc.Policy.Paused ||
				doc.Policy.PauseFile != "/etc/stapling-agent/pause" || doc.Policy.Decision.Kind != string(c.kind) {
				t.Fatalf("JSON: %v %+v", err, doc.Policy)
			}
			if c.kind == policy.Paused && (len(r.Actions) != 1 || r.Actions[0].WouldChange) {
				t.Fatalf("actions %+v", r.Actions)
			}
		})
	}
	// Without the file: not paused, and JSON says so.
	_, e := auditFixture(t, wiredHTTPD, "", connect)
	if r := runAudit(e); r.Policy.Paused || r.Policy.Decision.Kind != policy.Act || strings.Contains(r.Summary, "paused") {
		t.Fatalf("paused without the file: %s %s", r.Policy.Decision.Kind, r.Summary)
	}
}

// The audit timer's textfile carries the last audit's time for staleness alerts.
func TestRenderPrometheusLastAuditTimestamp(t *testing.T) {
	r := &Report{Status: OK, GeneratedAt: time.Unix(1700000000, 0).UTC()}
	out := render(t, r, Prometheus)
	if !strings.Contains(out, "# TYPE stapling_agent_last_audit_timestamp_seconds gauge\n") ||
		!strings.Contains(out, fmt.Sprintf("\nstapling_agent_last_audit_timestamp_seconds %d\n", 1700000000)) {
		t.Fatalf("exposition:\n%s", out)
	}
	promtoolCheck(t, out)
}
