package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// daemonRig is a daemon over a fake EA4 host with a recording runner and a settable clock.
type daemonRig struct {
	*fixture
	d      *Daemon
	clock  time.Time
	logf   *os.File
	logDir string
	pid    int
}

func newDaemonRig(t *testing.T, mode string, prelog string, mutate func(*Config)) *daemonRig {
	t.Helper()
	f := newFixture(t, "ea4", map[string]string{ea4HTTPD: wiredHTTPD, ea4Include: adminBytes})
	rig := &daemonRig{fixture: f, clock: time.Now().Truncate(time.Second), pid: 1000}
	rig.logDir = filepath.Join(f.root, "var/log/apache2")
	os.MkdirAll(rig.logDir, 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(f.root, "etc/apache2/logs"))
	os.WriteFile(filepath.Join(rig.logDir, "error_log"), []byte(prelog), 0o644)
	rig.reopen(t)
	cfg, err := loadConfig(newViper(), filepath.Join(f.root, "absent"), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mode = mode
	if mutate != nil {
		mutate(cfg)
	}
	now := func() time.Time { return rig.clock }
	f.r.Now = now
	e := &env{cfg: cfg, log: zerolog.Nop(), layout: f.layout, state: f.r.State, now: now}
	rig.d = newDaemon(e, f.r, false)
	t.Cleanup(rig.d.follow.Close)
	return rig
}

func (r *daemonRig) reopen(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(r.logDir, "error_log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	r.logf = f
}

// fail appends n failed renewals (transport line and AH01941) at the current clock.
func (r *daemonRig) fail(n int) {
	for i := 0; i < n; i++ {
		r.pid++
		ts := r.clock.Format("Mon Jan 02 15:04:05.000000 2006")
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid %d] (111)Connection refused: [client 192.0.2.1:443] AH01974: could not connect to OCSP responder 'ocsp.example.net'\n", ts, r.pid)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", ts, r.pid)
	}
}

func (r *daemonRig) poll() { r.d.Poll(context.Background()) }

func (r *daemonRig) decisions() string { return strings.Join(r.d.Decisions, ",") }

func TestDaemonActsOnceThenReportsNotEffective(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", nil)
	r.d.Start(context.Background())
	r.fail(2)
	r.poll()
	if r.decisions() != "" || len(r.runner.calls) != 0 {
		t.Fatalf("acted below the threshold: %s", r.decisions())
	}
	r.clock = r.clock.Add(time.Minute)
	r.fail(1)
	r.poll()
	if r.decisions() != "remediate" || r.runner.names() != "configtest,restart" {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.runner.names())
	}
	if !apacheconf.InspectInclude([]byte(r.read(t, ea4Include))).StaplingOff {
		t.Fatal("include not remediated")
	}
	// Failures right after the restart (in-flight handshakes) do not count.
	r.clock = r.clock.Add(10 * time.Second)
	r.fail(5)
	r.poll()
	if r.decisions() != "remediate" {
		t.Fatalf("counted failures within the grace period: %s", r.decisions())
	}
	// Failures that keep coming with stapling off: report once, never restart.
	for i := 0; i < 20; i++ {
		r.clock = r.clock.Add(2 * time.Minute)
		r.fail(3)
		r.poll()
	}
	if r.decisions() != "remediate,cooldown" && r.decisions() != "remediate,not_effective" {
		t.Fatalf("decisions %s", r.decisions())
	}
	r.clock = r.clock.Add(2 * time.Hour)
	r.fail(3)
	r.poll()
	if !strings.HasSuffix(r.decisions(), "not_effective") || strings.Count(r.runner.names(), "restart") != 1 {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.runner.names())
	}
}

func TestDaemonCooldownAndMaxPerDay(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", func(c *Config) { c.Policy.MaxPerDay = 2 })
	r.d.Start(context.Background())
	revertByAdmin := func() { os.WriteFile(filepath.Join(r.root, ea4Include), []byte(adminBytes), 0o644) }

	r.fail(3)
	r.poll() // 1st remediation
	revertByAdmin()
	r.clock = r.clock.Add(5 * time.Minute)
	r.fail(3)
	r.poll() // in cooldown: report only
	r.clock = r.clock.Add(2 * time.Minute)
	r.fail(3)
	r.poll() // still cooldown: nothing new
	r.clock = r.clock.Add(time.Hour)
	r.fail(3)
	r.poll() // 2nd remediation
	revertByAdmin()
	r.clock = r.clock.Add(2 * time.Hour)
	r.fail(3)
	r.poll() // max_per_day reached
	if got := r.decisions(); got != "remediate,cooldown,remediate,max_per_day" {
		t.Fatalf("decisions %s", got)
	}
	if n := strings.Count(r.runner.names(), "restart"); n != 2 {
		t.Fatalf("%d restarts", n)
	}
	r.clock = r.clock.Add(day)
	r.fail(3)
	r.poll()
	if !strings.HasSuffix(r.decisions(), ",remediate") {
		t.Fatalf("a day later: %s", r.decisions())
	}
}

func TestDaemonDryRunTouchesNothing(t *testing.T) {
	r := newDaemonRig(t, "dry-run", "", nil)
	r.d.Start(context.Background())
	for i := 0; i < 10; i++ {
		r.fail(3)
		r.poll()
		r.clock = r.clock.Add(time.Minute)
	}
	// Once per cooldown: the dry-run decision, then one note that the threshold was reached
	// again while cooling down.
	if r.decisions() != "dry_run,cooldown" || len(r.runner.calls) != 0 || r.read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.runner.names())
	}
	if _, err := os.Stat(r.r.State.Dir); !os.IsNotExist(err) {
		t.Fatal("dry run created the state directory")
	}
	r.clock = r.clock.Add(time.Hour)
	r.fail(3)
	r.poll()
	if r.decisions() != "dry_run,cooldown,dry_run" {
		t.Fatalf("after the cooldown: %s", r.decisions())
	}
}

func TestDaemonReplaysHistoryAtStart(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	line := func(ago time.Duration, pid int) string {
		return fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n",
			now.Add(-ago).Format("Mon Jan 02 15:04:05.000000 2006"), pid)
	}
	// Two old failures outside the window, three inside.
	prelog := line(2*time.Hour, 1) + line(time.Hour, 2) + line(8*time.Minute, 3) + line(4*time.Minute, 4) + line(time.Minute, 5)
	r := newDaemonRig(t, "enforce", prelog, nil)
	r.clock = now
	r.d.Start(context.Background())
	if r.decisions() != "remediate" || r.d.Failures != 3 {
		t.Fatalf("decisions %s after replaying %d failures", r.decisions(), r.d.Failures)
	}
	r.poll() // the replayed lines are not delivered again
	if r.d.Failures != 3 {
		t.Fatalf("replayed lines counted twice: %d", r.d.Failures)
	}
}

func TestDaemonIgnoresForgedCertificateAndInitLines(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", func(c *Config) { c.Policy.Threshold = 1 })
	r.d.Start(context.Background())
	ts := r.clock.Format("Mon Jan 02 15:04:05.000000 2006")
	for i := 0; i < 5; i++ {
		fmt.Fprintf(r.logf, "[%s] [core:error] [pid 9] [client 203.0.113.66:41000] AH00126: Invalid URI in request GET /x]%%20[ssl:error]%%20AH01941:%%20stapling_renew_response:%%20responder%%20error\n", ts)
		fmt.Fprintf(r.logf, "[%s] [proxy_fcgi:error] [pid 9] [client 1.2.3.4:5] AH01071: Got error 'PHP message: x\\n[%s] [ssl:error] [pid 9] AH01941: stapling_renew_response: responder error'\n", ts, ts)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid 9] AH02969: stapling_check_response: response has certificate status revoked (reason: n/a) for serial number 0A\n", ts)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid 9] AH02218: ssl_stapling_init_cert: no OCSP URI in certificate and no SSLStaplingForceURL set [subject: CN=a]\n", ts)
		fmt.Fprintf(r.logf, "[%s] [ssl:error] [pid 9] AH02604: Unable to configure certificate a:443:0 for stapling\n", ts)
	}
	r.poll()
	if r.d.Failures != 0 || r.decisions() != "" {
		t.Fatalf("counted %d failures, decisions %s", r.d.Failures, r.decisions())
	}
}

func TestDaemonKeepsCooldownAcrossRestarts(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", nil)
	r.r.State.Ensure()
	r.r.State.Append(JournalEntry{Time: r.clock.Add(-10 * time.Minute), Action: "remediate", Step: "done", File: ea4Include})
	revert := apacheconf.InspectInclude([]byte(r.read(t, ea4Include)))
	if revert.StaplingOff {
		t.Fatal("fixture include should have stapling on")
	}
	r.d.Start(context.Background())
	r.fail(5)
	r.poll()
	if r.decisions() != "cooldown" || len(r.runner.calls) != 0 {
		t.Fatalf("a restarted daemon forgot its cooldown: %s, ran %s", r.decisions(), r.runner.names())
	}
}

func TestDaemonRotationMidBurst(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", nil)
	r.d.Start(context.Background())
	r.fail(2)
	r.poll()
	os.Rename(filepath.Join(r.logDir, "error_log"), filepath.Join(r.logDir, "error_log.bkup"))
	r.fail(1) // to the renamed file, before Apache's graceful restart reopens
	r.reopen(t)
	r.fail(1)
	r.poll()
	// The third failure, written to the renamed file, reached the threshold; the fourth, in the
	// new file, was delivered too (8 lines) but falls in the grace after our restart.
	if r.decisions() != "remediate" || strings.Count(r.runner.names(), "restart") != 1 || r.d.Failures != 3 || r.d.follow.Lines.Load() != 8 {
		t.Fatalf("decisions %s, failures %d, lines %d, ran %s", r.decisions(), r.d.Failures, r.d.follow.Lines.Load(), r.runner.names())
	}
}

func TestDaemonFinishesInterruptedRemediationAtStart(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", nil)
	next, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	os.WriteFile(filepath.Join(r.root, ea4Include), next, 0o644)
	r.r.State.Ensure()
	r.r.State.Append(JournalEntry{Action: "remediate", Step: "written", File: ea4Include})
	r.d.Start(context.Background())
	if r.decisions() != "finish_interrupted" || r.runner.names() != "configtest,restart" {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.runner.names())
	}
}

func TestDaemonAutoRevert(t *testing.T) {
	r := newDaemonRig(t, "enforce", "", func(c *Config) { c.Policy.AutoRevertAfter = 30 * time.Minute })
	healthy := false
	r.d.probe = func(context.Context) []ResponderResult {
		return []ResponderResult{{URL: "http://ocsp.example.net/", OK: healthy}}
	}
	r.d.Start(context.Background())
	r.fail(3)
	r.poll()
	if r.decisions() != "remediate" {
		t.Fatalf("decisions %s", r.decisions())
	}
	step := func(d time.Duration) { r.clock = r.clock.Add(d); r.d.checkAutoRevert(context.Background()) }
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
	if !strings.HasSuffix(r.decisions(), "auto_revert") || r.read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %s, include %q", r.decisions(), r.read(t, ea4Include))
	}
}
