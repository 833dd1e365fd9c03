package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/audit"
	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// The audit says "the daemon would act" exactly when the daemon would, and says why not when it
// would not: over the same host states, a daemon starting now (replaying the last policy
// window, as it does) and the audit reach the same decision.
func TestDaemonAndAuditAgree(t *testing.T) {
	offBlock, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	failuresAt := func(responder string, n int, from time.Duration) func(now time.Time) string {
		return func(now time.Time) string {
			var sb strings.Builder
			for i := 0; i < n; i++ {
				sb.WriteString(fakehost.Failure(now.Add(-from+time.Duration(i)*time.Second), 100+i, responder))
			}
			return sb.String()
		}
	}
	failures := func(n int, from time.Duration) func(now time.Time) string {
		return failuresAt("ocsp.example.net", n, from)
	}
	journal := func(agos ...time.Duration) []time.Duration { return agos }
	cases := []struct {
		name    string
		mode    policy.Mode
		log     func(now time.Time) string
		include string
		httpd   string
		dones   []time.Duration // our remediations, this long ago
		answers bool            // the responder answers when asked from this host
		paused  bool            // the fleet's pause file exists
		want    policy.Kind
	}{
		{name: "quiet", log: failures(0, 0), want: policy.None},
		{name: "below the threshold", log: failures(2, 5*time.Minute), want: policy.None},
		{name: "outage, stapling on", log: failures(3, 5*time.Minute), want: policy.Act},
		{name: "outage long ago", log: failures(5, 3*time.Hour), want: policy.None},
		{name: "the log lies: the responder answers", log: failures(5, 5*time.Minute), answers: true, want: policy.NotCorroborated},
		{name: "failures name a responder no served certificate uses", log: failuresAt("evil.example", 9, 5*time.Minute), want: policy.None},
		{name: "outage, dry-run", mode: policy.DryRunMode, log: failures(3, 5*time.Minute), want: policy.DryRun},
		{name: "our block in place, failures go on", log: failures(4, 5*time.Minute), include: string(offBlock),
			dones: journal(time.Hour), want: policy.NotEffective},
		{name: "failures only before our restart's grace", log: failures(4, 9*time.Minute), include: string(offBlock),
			dones: journal(5 * time.Minute), want: policy.None},
		{name: "cooldown (an admin reverted our fix)", log: failures(3, 5*time.Minute), dones: journal(20 * time.Minute), want: policy.Cooldown},
		{name: "max per day", log: failures(3, 5*time.Minute), dones: journal(20*time.Hour, 15*time.Hour, 10*time.Hour), want: policy.MaxPerDay},
		{name: "Must-Staple: refused", log: failures(3, 5*time.Minute), httpd: fakehost.WiredHTTPD +
			"<VirtualHost *:443>\nServerName ms.example\nSSLEngine on\nSSLCertificateFile /etc/apache2/ssl/ms.combined\n</VirtualHost>\n",
			want: policy.Refused},
		{name: "outage, paused", log: failures(3, 5*time.Minute), paused: true, want: policy.Paused},
		{name: "outage, dry-run, paused", mode: policy.DryRunMode, log: failures(3, 5*time.Minute), paused: true, want: policy.Paused},
		{name: "paused, the log lies", log: failures(5, 5*time.Minute), answers: true, paused: true, want: policy.NotCorroborated},
		{name: "paused, quiet", log: failures(0, 0), paused: true, want: policy.None},
		{name: "include off but not wired: act (the rebuild)", log: failures(3, 5*time.Minute), include: "SSLUseStapling off\n",
			httpd: strings.Replace(fakehost.WiredHTTPD, "Include \"/etc/apache2/conf.d/includes/pre_virtualhost_global.conf\"\n", "", 1), want: policy.Act},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mode := c.mode
			if mode == "" {
				mode = policy.Enforce
			}
			r := newRig(t, mode, "", nil)
			r.asker.Down[fakehost.Responder] = !c.answers
			now := r.Now()
			fakehost.Write(t, r.Root, fakehost.EA4Log, c.log(now))
			if c.include != "" {
				fakehost.Write(t, r.Root, ea4Include, c.include)
			}
			if c.httpd != "" {
				fakehost.Write(t, r.Root, fakehost.EA4HTTPD, c.httpd)
				fakehost.Write(t, r.Root, "/etc/apache2/ssl/ms.combined", mustStapleCert(t))
			}
			if c.paused {
				fakehost.Write(t, r.Root, config.DefaultPauseFile, "")
			}
			for _, ago := range c.dones {
				r.env.State.Ensure()
				r.env.State.Append(state.Entry{Time: now.Add(-ago), Action: state.Remediate, Step: state.Done, File: ea4Include})
			}
			rep := audit.Run(context.Background(), r.env, audit.Options{Since: 24 * time.Hour, Ask: r.asker.Ask})
			// A fresh daemon over the same host, starting now.
			d, err := New(r.env, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			d.rem.Verify, d.Ask = nil, r.asker.Ask
			r.Runner.Reset()
			r.d = d
			t.Cleanup(d.follow.Close)
			r.begin()
			daemonSaid := policy.None
			if k := d.Decisions(); len(k) > 0 {
				daemonSaid = k[0]
			}
			if daemonSaid != c.want || rep.Policy.Decision.Kind != c.want {
				t.Fatalf("daemon %s, audit %s (%s), want %s", daemonSaid, rep.Policy.Decision.Kind, rep.Policy.Decision.Reason, c.want)
			}
			if wouldAct := c.want == policy.Act || c.want == policy.DryRun; rep.Policy.WouldAct != wouldAct {
				t.Fatalf("audit would_act %v", rep.Policy.WouldAct)
			}
			if rep.Policy.Paused != c.paused || (c.paused && !strings.Contains(rep.Summary, "the daemon is paused: /etc/stapling-agent/pause exists")) {
				t.Fatalf("audit paused %v, summary %q", rep.Policy.Paused, rep.Summary)
			}
		})
	}
}
