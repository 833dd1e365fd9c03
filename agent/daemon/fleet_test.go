package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// spreading makes the rig's daemon spread its acts over spread, always picking delay, on a
// timer the test fires (fire). It returns the log and the delays the loop waited for.
func (r *rig) spreading(delay time.Duration) (logs *syncBuffer, waited *[]time.Duration) {
	logs, waited = &syncBuffer{}, &[]time.Duration{}
	r.env.Config.Policy.Spread = time.Minute
	r.env.Log = zerolog.New(logs)
	r.d.Rand = func(max time.Duration) time.Duration {
		if max != time.Minute {
			r.t.Fatalf("delay asked up to %s", max)
		}
		return delay
	}
	r.d.After = func(d time.Duration) <-chan time.Time {
		*waited = append(*waited, d)
		return make(chan time.Time) // never fires: the test calls fire
	}
	return logs, waited
}

// fire ends the spread delay the loop waits on, as its timer would, with every job done.
func (r *rig) fire() {
	r.t.Helper()
	if r.d.spreadC == nil {
		r.t.Fatal("no spread delay under way")
	}
	r.d.spreadDue()
	r.drain()
}

// A confirmed outage is acted on after the random delay, not at once: the delay is logged,
// the worker is free meanwhile, newer failures wait for the decision made again at its end,
// and the act happens once.
func TestDaemonSpreadWaitsThenActs(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	logs, waited := r.spreading(42 * time.Second)
	r.begin()
	r.fail(3)
	r.poll()
	if r.decisions() != "" || r.Runner.Names() != "" || len(*waited) != 1 || (*waited)[0] != 42*time.Second {
		t.Fatalf("acted before the spread delay: decisions %q, ran %q, waited %v", r.decisions(), r.Runner.Names(), *waited)
	}
	if !strings.Contains(logs.String(), `"delay":"42s"`) || !strings.Contains(logs.String(), `"spread":"1m"`) {
		t.Fatalf("the chosen delay is not logged:\n%s", logs.String())
	}
	r.Advance(20 * time.Second)
	r.fail(2) // counted, held for the decision at the end of the delay
	r.poll()
	if r.decisions() != "" || len(*waited) != 1 || r.d.busy {
		t.Fatalf("a second decision during the delay: %q, waited %v, busy %v", r.decisions(), *waited, r.d.busy)
	}
	r.Advance(22 * time.Second)
	r.fire()
	if r.decisions() != "remediate" || r.Runner.Names() != "configtest,restart" || len(*waited) != 1 {
		t.Fatalf("after the delay: decisions %q, ran %q, waited %v", r.decisions(), r.Runner.Names(), *waited)
	}
	if !strings.Contains(logs.String(), `"spread_delay":"42s"`) || !strings.Contains(logs.String(), `"failures_in_window":5`) {
		t.Fatalf("the decision does not say it was spread, or not on the failures of now:\n%s", logs.String())
	}
}

// The decision is made again at the end of the delay, on the host of then: an outage that is
// over, a fix an admin made meanwhile, or a pause dropped meanwhile means no act.
func TestDaemonSpreadDecidesAgain(t *testing.T) {
	offBlock, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	for _, c := range []struct {
		name   string
		change func(r *rig)
		want   policy.Kind
		reason string
	}{
		{"the responder answers again", func(r *rig) { r.asker.Down[fakehost.Responder] = false }, policy.NotCorroborated, "answers correctly from this host now"},
		{"an admin turned stapling off", func(r *rig) { fakehost.Write(t, r.Root, ea4Include, string(offBlock)) }, policy.NotEffective, "already off"},
		{"the fleet paused", func(r *rig) { fakehost.Write(t, r.Root, config.DefaultPauseFile, "") }, policy.Paused, "fleet-wide pause"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, policy.Enforce, "", nil)
			logs, _ := r.spreading(30 * time.Second)
			r.begin()
			r.fail(3)
			r.poll()
			c.change(r)
			r.Advance(30 * time.Second)
			r.fire()
			if r.decisions() != string(c.want) || r.Runner.Names() != "" {
				t.Fatalf("decisions %q, ran %q", r.decisions(), r.Runner.Names())
			}
			if want := "decided again after the spread delay (30s): "; !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), c.reason) {
				t.Fatalf("log lacks %q and %q:\n%s", want, c.reason, logs.String())
			}
			if len(r.d.mem.Acts) != 0 {
				t.Fatalf("no act, yet the budget was spent: %+v", r.d.mem)
			}
		})
	}
}

// The delay is the worker's to wait, not the loop's: the watchdog is answered and lines are
// read throughout, and SIGTERM during the delay stops the daemon at once without acting.
func TestRunSpreadSIGTERMDuringTheDelay(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	logs, _ := r.spreading(45 * time.Second)
	run := run(t, r.d)
	r.fail(3)
	send(t, run.poll, time.Now())
	waitFor(t, "the spread delay", func() bool { return strings.Contains(logs.String(), `"delay":"45s"`) })
	for i := 0; i < 3; i++ {
		r.fail(1)
		send(t, run.poll, time.Now())
		send(t, run.watchdog, time.Now())
		run.expect("WATCHDOG=1")
	}
	start := time.Now()
	run.cancel()
	run.expect("STOPPING=1")
	select {
	case err := <-run.done:
		run.done <- err // for the cleanup
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return during the spread delay")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s to stop", d)
	}
	if r.decisions() != "" || r.Runner.Names() != "" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("acted on SIGTERM: decisions %q, ran %q", r.decisions(), r.Runner.Names())
	}
	if !strings.Contains(logs.String(), "stopping during the spread delay") {
		t.Fatalf("the stop does not say it dropped a decision:\n%s", logs.String())
	}
}

// While the pause file exists the daemon decides and reports (paused, once per cooldown) and
// changes nothing; once it is removed, the next outage is fixed.
func TestDaemonPaused(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	fakehost.Write(t, r.Root, config.DefaultPauseFile, "maintenance by fleet tooling\n")
	r.begin()
	for i := 0; i < 10; i++ {
		r.fail(3)
		r.poll()
		r.Advance(time.Minute)
	}
	if r.decisions() != "paused" || r.Runner.Names() != "" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("decisions %q, ran %q", r.decisions(), r.Runner.Names())
	}
	if len(r.d.mem.Acts) != 0 || !r.d.mem.LastAct.IsZero() {
		t.Fatalf("a pause spent the budget: %+v", r.d.mem)
	}
	r.Advance(time.Hour)
	r.fail(3)
	r.poll()
	if r.decisions() != "paused,paused" {
		t.Fatalf("once per cooldown: %q", r.decisions())
	}
	os.Remove(filepath.Join(r.Root, config.DefaultPauseFile))
	r.Advance(time.Minute)
	r.fail(3)
	r.poll()
	if r.decisions() != "paused,paused,remediate" || r.Runner.Names() != "configtest,restart" {
		t.Fatalf("after the pause: decisions %q, ran %q", r.decisions(), r.Runner.Names())
	}
}

// A pause holds back the auto-revert too (it restarts Apache); the healthy period goes on, and
// the revert follows at the first check after the pause is lifted.
func TestDaemonPausedHoldsTheAutoRevert(t *testing.T) {
	r := newRig(t, policy.Enforce, "", func(c *config.Config) { c.Policy.AutoRevertAfter = 30 * time.Minute })
	r.d.Probe = func(context.Context, *apacheconf.Layout) []probe.ResponderResult {
		return []probe.ResponderResult{{URL: fakehost.Responder, OK: true}}
	}
	r.begin()
	r.fail(3)
	r.poll()
	fakehost.Write(t, r.Root, config.DefaultPauseFile, "")
	check := func() {
		r.Advance(10 * time.Minute)
		r.d.send(job{kind: policy.AutoRevert, lastFailure: r.d.lastFailure})
		r.drain()
	}
	for i := 0; i < 6; i++ {
		check()
	}
	if r.decisions() != "remediate,paused" || !apacheconf.InspectInclude([]byte(r.Read(t, ea4Include))).ManagedBlock {
		t.Fatalf("decisions %q; the block must stay while paused", r.decisions())
	}
	os.Remove(filepath.Join(r.Root, config.DefaultPauseFile))
	check()
	if r.decisions() != "remediate,paused,auto_revert" || r.Read(t, ea4Include) != adminBytes {
		t.Fatalf("after the pause: decisions %q", r.decisions())
	}
}

// The counters reach node_exporter's textfile directory as a valid exposition, 0644 whatever
// the umask, with no temporary file left; they are monotonic across a restart of the daemon
// (kept in the state directory), and the file is written at most every MetricsEvery.
func TestDaemonMetricsTextfile(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	dir := filepath.Join(r.Root, config.DefaultTextfileDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	prom := filepath.Join(dir, DaemonTextfile)
	r.begin()
	started := r.Now()
	r.fail(3)
	for i := 0; i < 2; i++ {
		r.pid++
		fmt.Fprint(r.logf, fakehost.Failure(r.Now(), r.pid, "evil.example"))
	}
	r.Advance(MetricsEvery)
	r.poll() // counts the failures, writes, then the worker remediates
	r.Advance(MetricsEvery)
	r.poll() // writes the decision
	got := readProm(t, prom)
	for _, want := range []string{
		fmt.Sprintf("stapling_agent_daemon_start_time_seconds %d\n", started.Unix()),
		`stapling_agent_daemon_responder_failures_total{cause="connect_refused",responder="ocsp.example.net:80"} 3` + "\n",
		`stapling_agent_daemon_responder_failures_total{cause="connect_refused",responder="foreign"} 2` + "\n",
		`stapling_agent_decisions_total{kind="remediate"} 1` + "\n",
		`stapling_agent_decisions_total{kind="paused"} 0` + "\n",
		`stapling_agent_remediations_total{result="ok"} 1` + "\n",
		`stapling_agent_remediations_total{result="failed"} 0` + "\n",
		"stapling_agent_reverts_total 0\n",
		"stapling_agent_log_lines_total 10\n",
		"stapling_agent_paused 0\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("textfile lacks %q:\n%s", want, got)
		}
	}
	promtoolCheck(t, got)
	if info, _ := os.Stat(prom); info.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", info.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the textfile directory: %v", entries)
	}

	// Not again within MetricsEvery.
	r.fail(1)
	r.Advance(time.Second)
	r.poll()
	if readProm(t, prom) != got {
		t.Fatal("written again within MetricsEvery")
	}

	// A new daemon on the same host: the counters go on from where they were.
	fakehost.Write(t, r.Root, config.DefaultPauseFile, "")
	d, err := New(r.env, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.rem.Verify, d.Ask = nil, r.asker.Ask
	r.d = d
	t.Cleanup(d.follow.Close)
	r.Advance(time.Minute)
	restarted := r.Now()
	r.begin()
	r.fail(1)
	r.Advance(MetricsEvery)
	r.poll()
	got = readProm(t, prom)
	for _, want := range []string{
		fmt.Sprintf("stapling_agent_daemon_start_time_seconds %d\n", restarted.Unix()),
		`stapling_agent_daemon_responder_failures_total{cause="connect_refused",responder="ocsp.example.net:80"} 4` + "\n", // 3, then 1 live (the one in between was after the last write)
		`stapling_agent_decisions_total{kind="remediate"} 1` + "\n",
		"stapling_agent_log_lines_total 12\n",
		"stapling_agent_paused 1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("after a restart, textfile lacks %q:\n%s", want, got)
		}
	}
	promtoolCheck(t, got)
}

// At exit the last counts are written, whatever MetricsEvery says.
func TestRunWritesMetricsAtExit(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	dir := filepath.Join(r.Root, config.DefaultTextfileDir)
	os.MkdirAll(dir, 0o755)
	run := run(t, r.d)
	r.fail(3)
	send(t, run.poll, time.Now())
	waitFor(t, "the decision", func() bool { return r.decisions() == "remediate" })
	run.cancel()
	select {
	case err := <-run.done:
		run.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	got := readProm(t, filepath.Join(dir, DaemonTextfile))
	if !strings.Contains(got, `stapling_agent_decisions_total{kind="remediate"} 1`) || !strings.Contains(got, "stapling_agent_log_lines_total 6\n") {
		t.Fatalf("textfile at exit:\n%s", got)
	}
}

// Without the directory (node_exporter not installed) or with "" nothing is written, and the
// state directory is not created for the counters.
func TestDaemonMetricsOff(t *testing.T) {
	for name, dir := range map[string]string{"absent directory": config.DefaultTextfileDir, "disabled": ""} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, policy.DryRunMode, "", func(c *config.Config) { c.Metrics.TextfileDir = dir })
			r.begin()
			r.fail(3)
			r.Advance(time.Minute)
			r.poll()
			if _, err := os.Stat(filepath.Join(r.Root, config.DefaultTextfileDir)); !os.IsNotExist(err) {
				t.Fatal("created the textfile directory")
			}
			if _, err := os.Stat(r.env.State.Dir); !os.IsNotExist(err) {
				t.Fatal("created the state directory")
			}
		})
	}
}

// The responder label is bounded: the first ten served responders to fail get a series, the
// rest are "other"; a failure naming none is "unknown", one naming an unserved responder
// "foreign". No count ever goes down (a responder ranking would move counts between series),
// and hostile names stay valid label values.
func TestCountersResponderSeries(t *testing.T) {
	c := newCounters()
	prev := map[string]int64{}
	monotonic := func() {
		t.Helper()
		for k, n := range c.snapshot(0).Failures["dns"] {
			if n < prev[k] {
				t.Fatalf("%s went down: %d -> %d", k, prev[k], n)
			}
			prev[k] = n
		}
	}
	for i := 0; i < 15; i++ {
		for j := 0; j <= i; j++ { // later responders fail more often: still "other"
			c.failure("dns", fmt.Sprintf("ocsp%d.example:80", i), true)
		}
		monotonic()
	}
	c.failure("dns", "", true)
	c.failure("dns", "evil\"\n\\.example:80", false)
	c.failure("dns", "ocsp0.example:80", true)
	monotonic()
	v := c.snapshot(0)
	if len(v.Responders) != maxResponderSeries || len(v.Failures["dns"]) != maxResponderSeries+3 {
		t.Fatalf("series %d: %v", len(v.Failures["dns"]), v.Failures)
	}
	if v.Failures["dns"][responderOther] != 11+12+13+14+15 || v.Failures["dns"]["ocsp0.example:80"] != 2 ||
		v.Failures["dns"][responderUnknown] != 1 || v.Failures["dns"][responderForeign] != 1 {
		t.Fatalf("counts %v", v.Failures["dns"])
	}
	// A served responder whose name is hostile text: escaped, cut, one series.
	h := newCounters()
	long := strings.Repeat("a", 300) + ":80"
	h.failure("dns", "x\"y\\z\nw\xff:80", true)
	h.failure("dns", long, true)
	h.failure("dns", long+"0", true) // cuts to the same label: the same series
	out := string(exposition(h.snapshot(0), time.Unix(1700000000, 0), false))
	if !strings.Contains(out, `responder="x\"y\\z\nw`+"\uFFFD"+`:80"} 1`) || strings.Count(out, `responder="aaaa`) != 1 {
		t.Fatalf("exposition:\n%s", out)
	}
	promtoolCheck(t, out)
}

// A counters file that is not ours is ignored whole (a reset), never half used.
func TestCountersLoadRejectsForeignFiles(t *testing.T) {
	for name, content := range map[string]string{
		"not json":          "{",
		"negative":          `{"reverts":-1}`,
		"unknown kind":      `{"decisions":{"explode":1}}`,
		"unknown responder": `{"failures":{"dns":{"x.example:80":5}}}`,
		"too many series":   `{"responders":["a:1","b:1","c:1","d:1","e:1","f:1","g:1","h:1","i:1","j:1","k:1"]}`,
		"too large":         `{"log_lines":1` + strings.Repeat(" ", maxCountersFile) + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, countersFile), []byte(content), 0o600)
			c := newCounters()
			if err := c.load(dir); err == nil {
				t.Fatal("loaded")
			}
			if v := c.snapshot(0); v.Reverts != 0 || len(v.Decisions) != 0 || len(v.Failures) != 0 || v.LogLines != 0 {
				t.Fatalf("half used: %+v", v)
			}
		})
	}
	dir := t.TempDir()
	good, _ := json.Marshal(counterValues{Responders: []string{"x.example:80"}, Failures: map[string]map[string]int64{"dns": {"x.example:80": 5, "other": 1}},
		Decisions: map[policy.Kind]int64{policy.Act: 2}, Remediations: map[string]int64{"ok": 2}, Reverts: 1, LogLines: 99})
	os.WriteFile(filepath.Join(dir, countersFile), good, 0o600)
	c := newCounters()
	if err := c.load(dir); err != nil {
		t.Fatal(err)
	}
	c.failure("dns", "x.example:80", true)
	if v := c.snapshot(1); v.Failures["dns"]["x.example:80"] != 6 || v.LogLines != 100 || v.Decisions[policy.Act] != 2 {
		t.Fatalf("loaded %+v", v)
	}
}

func readProm(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var promErrors = regexp.MustCompile(`(?i)error`)

// promtoolCheck runs `promtool check metrics` (Debian's prometheus package), as the audit's
// renderer tests do: node_exporter's textfile collector drops the whole file on one bad line.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool missing in CI (.ci/run installs Debian's prometheus package)")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || promErrors.MatchString(stdout.String()+stderr.String()) {
		t.Fatalf("promtool check metrics: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
}
