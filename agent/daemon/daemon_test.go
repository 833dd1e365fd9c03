package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/frontend"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

const (
	ea4Include = fakehost.EA4Include
	adminBytes = fakehost.AdminBytes
)

// rig is a daemon over a fake EA4 host with a recording runner and a settable clock. Its
// loop steps (begin, poll) and its worker's jobs are run by the test, in order, so nothing
// sleeps; TestRun* drive the real Run through injected ticks.
type rig struct {
	*fakehost.Host
	t     *testing.T
	env   *env.Env
	d     *Daemon
	logf  *os.File
	pid   int
	asker *fakehost.Asker // the responders as asked from this host: down unless told
}

func newRig(t *testing.T, mode policy.Mode, prelog string, mutate func(*config.Config)) *rig {
	t.Helper()
	h := fakehost.New(t, "ea4", map[string]string{fakehost.EA4HTTPD: fakehost.WiredHTTPD, ea4Include: adminBytes, fakehost.EA4Log: prelog})
	r := &rig{Host: h, t: t, pid: 1000}
	r.reopen()
	r.env = h.Env(t, func(c *config.Config) {
		c.Mode = mode
		// Act at once unless a test spreads: the spread tests set it and drive the delay.
		c.Policy.Spread = 0
		if mutate != nil {
			mutate(c)
		}
	})
	d, err := New(r.env, false, func() (*env.Env, error) { return r.env, nil })
	if err != nil {
		t.Fatal(err)
	}
	d.rem.Verify = nil
	r.Runner.Reset() // New asked the (absent) httpd; the tests count remediation commands
	r.asker = &fakehost.Asker{Down: map[string]bool{fakehost.Responder: true}}
	d.Ask = r.asker.Ask
	r.d = d
	t.Cleanup(d.follow.Close)
	return r
}

func (r *rig) reopen() {
	f, err := os.OpenFile(filepath.Join(r.Root, fakehost.EA4Log), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { f.Close() })
	r.logf = f
}

// fail appends n failed renewals (transport line and AH01941) at the current clock.
func (r *rig) fail(n int) {
	for i := 0; i < n; i++ {
		r.pid++
		fmt.Fprint(r.logf, fakehost.Failure(r.Now(), r.pid, "ocsp.example.net"))
	}
}

// begin is Run's start, with every job it queues done.
func (r *rig) begin() { r.d.begin(context.Background()); r.drain() }

// poll is one poll tick, with every job it queues done.
func (r *rig) poll() { r.d.poll(); r.drain() }

// drain runs the worker's queued jobs synchronously, as Run's loop would take their results.
func (r *rig) drain() {
	for {
		select {
		case j := <-r.d.jobs:
			r.d.finished(r.d.do(context.Background(), j))
		default:
			return
		}
	}
}

func (r *rig) decisions() string {
	var s []string
	for _, k := range r.d.Decisions() {
		s = append(s, string(k))
	}
	return strings.Join(s, ",")
}

func TestDaemonActsOnceThenReportsNotEffective(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.begin()
	r.fail(2)
	r.poll()
	if r.decisions() != "" || r.Runner.Names() != "" {
		t.Fatalf("acted below the threshold: %s", r.decisions())
	}
	r.Advance(time.Minute)
	r.fail(1)
	r.poll()
	if r.decisions() != "remediate" || r.Runner.Names() != "configtest,restart" {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
	if !apacheconf.InspectInclude([]byte(r.Read(t, ea4Include))).StaplingOff {
		t.Fatal("include not remediated")
	}
	// Failures right after the restart (in-flight handshakes) do not count.
	r.Advance(10 * time.Second)
	r.fail(5)
	r.poll()
	if r.decisions() != "remediate" {
		t.Fatalf("counted failures within the grace period: %s", r.decisions())
	}
	// Failures that keep coming with stapling off: "not effective" at once, even during the
	// cooldown, then once per cooldown; never a restart.
	for i := 0; i < 20; i++ {
		r.Advance(2 * time.Minute)
		r.fail(3)
		r.poll()
	}
	if r.decisions() != "remediate,not_effective" {
		t.Fatalf("decisions %s", r.decisions())
	}
	r.Advance(2 * time.Hour)
	r.fail(3)
	r.poll()
	if r.decisions() != "remediate,not_effective,not_effective" || strings.Count(r.Runner.Names(), "restart") != 1 {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
}

func TestDaemonCooldownAndMaxPerDay(t *testing.T) {
	r := newRig(t, policy.Enforce, "", func(c *config.Config) { c.Policy.MaxPerDay = 2 })
	r.begin()
	revertByAdmin := func() { fakehost.Write(t, r.Root, ea4Include, adminBytes) }

	r.fail(3)
	r.poll() // 1st remediation
	revertByAdmin()
	r.Advance(5 * time.Minute)
	r.fail(3)
	r.poll() // in cooldown: report only
	r.Advance(2 * time.Minute)
	r.fail(3)
	r.poll() // still cooldown: nothing new
	r.Advance(time.Hour)
	r.fail(3)
	r.poll() // 2nd remediation
	revertByAdmin()
	r.Advance(2 * time.Hour)
	r.fail(3)
	r.poll() // max_per_day reached
	if got := r.decisions(); got != "remediate,cooldown,remediate,max_per_day" {
		t.Fatalf("decisions %s", got)
	}
	if n := strings.Count(r.Runner.Names(), "restart"); n != 2 {
		t.Fatalf("%d restarts", n)
	}
	r.Advance(policy.Day)
	r.fail(3)
	r.poll()
	if !strings.HasSuffix(r.decisions(), ",remediate") {
		t.Fatalf("a day later: %s", r.decisions())
	}
}

func TestDaemonDryRunTouchesNothing(t *testing.T) {
	r := newRig(t, policy.DryRunMode, "", nil)
	r.begin()
	for i := 0; i < 10; i++ {
		r.fail(3)
		r.poll()
		r.Advance(time.Minute)
	}
	// Once per cooldown: the dry-run decision, then one note that the threshold was reached
	// again while cooling down.
	if r.decisions() != "dry_run,cooldown" || r.Runner.Names() != "" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
	if _, err := os.Stat(r.env.State.Dir); !os.IsNotExist(err) {
		t.Fatal("dry run created the state directory")
	}
	r.Advance(time.Hour)
	r.fail(3)
	r.poll()
	if r.decisions() != "dry_run,cooldown,dry_run" {
		t.Fatalf("after the cooldown: %s", r.decisions())
	}
}

func TestDaemonReplaysHistoryAtStart(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	line := func(ago time.Duration, pid int) string {
		return fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", fakehost.Stamp(now.Add(-ago)), pid)
	}
	// Two old failures outside the window, three inside.
	prelog := line(2*time.Hour, 1) + line(time.Hour, 2) + line(8*time.Minute, 3) + line(4*time.Minute, 4) + line(time.Minute, 5)
	r := newRig(t, policy.Enforce, prelog, nil)
	r.Set(now)
	r.begin()
	if r.decisions() != "remediate" || r.d.Failures.Load() != 3 {
		t.Fatalf("decisions %s after replaying %d failures", r.decisions(), r.d.Failures.Load())
	}
	r.poll() // the replayed lines are not delivered again
	if r.d.Failures.Load() != 3 {
		t.Fatalf("replayed lines counted twice: %d", r.d.Failures.Load())
	}
}

func TestDaemonIgnoresForgedCertificateAndInitLines(t *testing.T) {
	r := newRig(t, policy.Enforce, "", func(c *config.Config) { c.Policy.Threshold = 1 })
	r.begin()
	ts := fakehost.Stamp(r.Now())
	for i := 0; i < 5; i++ {
		fmt.Fprintf(r.logf, "[%s] [core:error] [pid 9] [client 203.0.113.66:41000] AH00126: Invalid URI in request GET /x]%%20[ssl:error]%%20AH01941:%%20stapling_renew_response:%%20responder%%20error\n", ts)
		fmt.Fprintf(r.logf, "[%s] [proxy_fcgi:error] [pid 9] [client 1.2.3.4:5] AH01071: Got error 'PHP message: x\\n[%s] [ssl:error] [pid 9] AH01941: stapling_renew_response: responder error'\n", ts, ts)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid 9] AH02969: stapling_check_response: response has certificate status revoked (reason: n/a) for serial number 0A\n", ts)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid 9] AH02218: ssl_stapling_init_cert: no OCSP URI in certificate and no SSLStaplingForceURL set [subject: CN=a]\n", ts)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid 9] AH02604: Unable to configure certificate a:443:0 for stapling\n", ts)
	}
	r.poll()
	if r.d.Failures.Load() != 0 || r.decisions() != "" {
		t.Fatalf("counted %d failures, decisions %s", r.d.Failures.Load(), r.decisions())
	}
}

func TestDaemonKeepsCooldownAcrossRestarts(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.env.State.Ensure()
	r.env.State.Append(state.Entry{Time: r.Now().Add(-10 * time.Minute), Action: state.Remediate, Step: state.Done, File: ea4Include})
	r.begin()
	r.fail(5)
	r.poll()
	if r.decisions() != "cooldown" || r.Runner.Names() != "" {
		t.Fatalf("a restarted daemon forgot its cooldown: %s, ran %s", r.decisions(), r.Runner.Names())
	}
}

func TestDaemonRotationMidBurst(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.begin()
	r.fail(2)
	r.poll()
	logDir := filepath.Join(r.Root, "var/log/apache2")
	os.Rename(filepath.Join(logDir, "error_log"), filepath.Join(logDir, "error_log.bkup"))
	r.fail(1) // to the renamed file, before Apache's graceful restart reopens
	r.reopen()
	r.fail(1)
	r.poll()
	// The third failure, written to the renamed file, reached the threshold; the fourth, in the
	// new file, was read in the same poll (8 lines), before the worker remediated once.
	if r.decisions() != "remediate" || strings.Count(r.Runner.Names(), "restart") != 1 || r.d.Failures.Load() != 4 || r.d.follow.Lines.Load() != 8 {
		t.Fatalf("decisions %s, failures %d, lines %d, ran %s", r.decisions(), r.d.Failures.Load(), r.d.follow.Lines.Load(), r.Runner.Names())
	}
}

func TestDaemonFinishesInterruptedRemediationAtStart(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	next, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	fakehost.Write(t, r.Root, ea4Include, string(next))
	r.env.State.Ensure()
	r.env.State.Append(state.Entry{Action: state.Remediate, Step: state.Written, File: ea4Include})
	r.begin()
	if r.decisions() != "finish_interrupted" || r.Runner.Names() != "configtest,restart" {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
}

// An auto-revert killed after it wrote the include is finished as a revert: the block stays
// gone and Apache is restarted on it, not remediated again.
func TestDaemonFinishesInterruptedRevertAsARevert(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.env.State.Ensure()
	r.env.State.Append(state.Entry{Action: state.Revert, Step: state.Written, File: ea4Include})
	r.begin()
	if r.decisions() != "finish_interrupted" || apacheconf.InspectInclude([]byte(r.Read(t, ea4Include))).ManagedBlock {
		t.Fatalf("decisions %s, ran %s, include %q", r.decisions(), r.Runner.Names(), r.Read(t, ea4Include))
	}
}

// A Must-Staple certificate on a vhost that would lose its staple: the daemon refuses, changes
// nothing, spends no budget, and says so once per cooldown.
func TestDaemonMustStapleRefusal(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	cert := mustStapleCert(t)
	fakehost.Write(t, r.Root, "/etc/apache2/ssl/ms.combined", cert)
	fakehost.Write(t, r.Root, fakehost.EA4HTTPD, fakehost.WiredHTTPD+
		"<VirtualHost *:443>\nServerName ms.example\nSSLEngine on\nSSLCertificateFile /etc/apache2/ssl/ms.combined\n</VirtualHost>\n")
	r.begin()
	for i := 0; i < 5; i++ {
		r.fail(3)
		r.poll()
		r.Advance(time.Minute)
	}
	if r.decisions() != "refused" || r.Runner.Names() != "" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
	if len(r.d.mem.Acts) != 0 || !r.d.mem.LastAct.IsZero() {
		t.Fatalf("a refusal spent the budget: %+v", r.d.mem)
	}
}

func TestDaemonAutoRevert(t *testing.T) {
	r := newRig(t, policy.Enforce, "", func(c *config.Config) { c.Policy.AutoRevertAfter = 30 * time.Minute })
	healthy := false
	r.d.Probe = func(context.Context, *apacheconf.Layout) []probe.ResponderResult {
		return []probe.ResponderResult{{URL: "http://ocsp.example.net/", OK: healthy}}
	}
	r.begin()
	r.fail(3)
	r.poll()
	if r.decisions() != "remediate" {
		t.Fatalf("decisions %s", r.decisions())
	}
	step := func(d time.Duration) {
		r.Advance(d)
		r.d.send(job{kind: policy.AutoRevert, lastFailure: r.d.lastFailure})
		r.drain()
	}
	step(5 * time.Minute) // still failing
	healthy = true
	step(5 * time.Minute) // healthy from now
	step(20 * time.Minute)
	if strings.Contains(r.decisions(), "auto_revert") {
		t.Fatal("reverted before the responders had been healthy for 30m")
	}
	r.fail(1) // a failure resets the clock
	r.poll()
	step(25 * time.Minute)
	step(10 * time.Minute)
	if strings.Contains(r.decisions(), "auto_revert") {
		t.Fatal("a failure did not reset the healthy period")
	}
	step(25 * time.Minute)
	if !strings.HasSuffix(r.decisions(), "auto_revert") || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, include %q", r.decisions(), r.Read(t, ea4Include))
	}
}

// An error_log that is missing at start is reported (at most once a minute, not every poll)
// and followed from its start once it appears.
func TestDaemonWaitsForAMissingLog(t *testing.T) {
	var logs syncBuffer
	r := newRig(t, policy.Enforce, "", nil)
	r.env.Log = zerolog.New(&logs)
	os.Remove(filepath.Join(r.Root, fakehost.EA4Log))
	r.begin()
	for i := 0; i < 10; i++ {
		r.poll()
	}
	if n := strings.Count(logs.String(), "cannot read error_log"); n != 1 {
		t.Fatalf("%d error lines in 10 polls:\n%s", n, logs.String())
	}
	r.Advance(time.Minute)
	r.poll()
	if n := strings.Count(logs.String(), "cannot read error_log"); n != 2 {
		t.Fatalf("%d error lines after a minute", n)
	}
	r.reopen()
	r.fail(3)
	r.poll()
	if r.decisions() != "remediate" {
		t.Fatalf("decisions %s", r.decisions())
	}
}

// Forged or real, failures alone never restart Apache: when the responder answers from this
// host, the daemon reports not_corroborated (once per cooldown) and changes nothing; a flood
// of such lines does not become a flood of requests to the CA.
func TestDaemonActsOnlyOnCorroboratedFailures(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.asker.Down[fakehost.Responder] = false
	r.begin()
	for i := 0; i < 20; i++ {
		r.fail(3)
		r.poll()
		r.Advance(time.Second)
	}
	if r.decisions() != "not_corroborated" || r.Runner.Names() != "" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
	if n := r.asker.Asked(); n < 1 || n > 2 {
		t.Fatalf("asked the responder %d times in 20 s of forged failures", n)
	}
	// The responder really goes down: the next failures are corroborated and fixed.
	r.asker.Down[fakehost.Responder] = true
	r.Advance(time.Minute)
	r.fail(3)
	r.poll()
	if r.decisions() != "not_corroborated,remediate" || r.Runner.Names() != "configtest,restart" {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
}

// Failures naming a responder that no certificate an SSL vhost serves uses (a tenant's own
// certificate, or a forged line) are reported, never counted.
func TestDaemonForeignRespondersNeverCount(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.begin()
	for i := 0; i < 10; i++ {
		r.pid++
		fmt.Fprint(r.logf, fakehost.Failure(r.Now(), r.pid, "evil.example"))
	}
	r.poll()
	if r.decisions() != "" || r.d.Failures.Load() != 0 || r.d.Foreign.Load() != 10 || r.asker.Asked() != 0 {
		t.Fatalf("decisions %s, failures %d, foreign %d, asked %d", r.decisions(), r.d.Failures.Load(), r.d.Foreign.Load(), r.asker.Asked())
	}
}

// Time comes from our clock, not the line: one line dated hours (or years) ahead or behind is
// counted as skewed and cannot blind the window; the real outage after it is still fixed.
func TestDaemonSkewedLinesCannotBlindIt(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	r.begin()
	now := r.Now()
	fmt.Fprint(r.logf, fakehost.Failure(now.Add(2*time.Hour), 7001, "ocsp.example.net"))
	fmt.Fprint(r.logf, fakehost.Failure(now.Add(3*365*24*time.Hour), 7002, "ocsp.example.net"))
	fmt.Fprint(r.logf, fakehost.Failure(now.Add(-400*24*time.Hour), 7003, "ocsp.example.net"))
	r.poll()
	if r.d.Skewed.Load() != 3 || r.d.Failures.Load() != 0 || r.decisions() != "" {
		t.Fatalf("skewed %d failures %d decisions %s", r.d.Skewed.Load(), r.d.Failures.Load(), r.decisions())
	}
	for i := 0; i < 11; i++ {
		r.Advance(5 * time.Second)
		r.fail(1)
		r.poll()
	}
	if r.decisions() != "remediate" {
		t.Fatalf("a real outage after skewed lines: decisions %s", r.decisions())
	}
}

// NGINX answers on 443: Apache's failures are its backend's, and the daemon reports
// not_client_facing instead of restarting Apache, however many there are.
func TestDaemonDoesNotRestartApacheBehindAFrontEnd(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	if err := frontend.WriteFakeListener(r.Root, 812, 443, "/usr/sbin/nginx"); err != nil {
		t.Fatal(err)
	}
	r.d.facts.invalidate() // read with the facts: nginx came after the rig's first reading
	r.begin()
	r.fail(10)
	r.poll()
	if r.decisions() != "not_client_facing" || r.Runner.Names() != "" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, ran %q", r.decisions(), r.Runner.Names())
	}
}
