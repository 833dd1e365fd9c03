package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

const (
	// effectGrace: handshakes already waiting on the responder when Apache restarts still log
	// AH01941 for a moment; failures this soon after our remediation do not count against it.
	effectGrace = 30 * time.Second
	// seenLogEvery limits the per-failure log line, so a dead responder on a busy host (one
	// failure per handshake) cannot flood the journal.
	seenLogEvery = 10 * time.Second
	// day is the max_per_day period.
	day = 24 * time.Hour
)

// Daemon follows error_log and applies the policy: act once when policy.threshold failures
// fall within policy.window, then hold off for policy.cooldown, at most policy.max_per_day
// times a day, and never restart Apache while stapling is already off.
type Daemon struct {
	layout *apacheconf.Layout
	cfg    *Config
	rem    *Remediator
	state  *State
	log    zerolog.Logger
	now    func() time.Time
	dryRun bool // forced by --dry-run; otherwise cfg.Mode decides
	notify func(string)

	follow  *logwatch.Follower
	corr    logwatch.Correlator
	counter *windowCounter
	cutoff  time.Time // failures at or before this do not count (our last remediation)
	start   time.Time // lines the follower delivers from before this were replayed already
	lastAct time.Time // last remediation (or dry-run report): cooldown runs from here
	acts    []time.Time
	reports map[string]time.Time // last time each kind of report was logged

	lastSeenLog time.Time
	suppressed  int

	// Auto-revert (policy.auto_revert_after): healthySince is when the responders started
	// answering correctly without a failure since; probe asks them (tests replace it).
	healthySince time.Time
	probe        func(ctx context.Context) []ResponderResult
	Failures     int64 // counted failures, for tests and the stop line
	Decisions    []string
}

func newDaemon(e *env, rem *Remediator, dryRun bool) *Daemon {
	d := &Daemon{
		layout: e.layout, cfg: e.cfg, rem: rem, state: e.state, log: e.log, now: e.now, dryRun: dryRun,
		notify:  func(string) {},
		reports: map[string]time.Time{},
	}
	d.counter = newWindowCounter(d.policy())
	d.follow = &logwatch.Follower{Path: e.layout.Path(e.layout.ErrorLog), OnError: d.followError}
	d.probe = func(ctx context.Context) []ResponderResult {
		cfg, err := apacheconf.ReadConfig(d.layout)
		if err != nil {
			return nil
		}
		return probeResponders(ctx, sslTargets(d.layout, cfg, 0), 10*time.Second)
	}
	return d
}

// autoRevertEvery is how often the responders are asked while stapling is off by our hand.
const autoRevertEvery = 5 * time.Minute

// checkAutoRevert probes the responders while our block is in place; once all have answered
// correctly for policy.auto_revert_after, it reverts with the same safety rules as `revert`.
func (d *Daemon) checkAutoRevert(ctx context.Context) {
	after := d.cfg.Policy.AutoRevertAfter
	if after <= 0 || d.mode() != "enforce" {
		return
	}
	inc, err := os.ReadFile(d.layout.Path(d.layout.Include))
	if err != nil || !apacheconf.InspectInclude(inc).ManagedBlock {
		d.healthySince = time.Time{}
		return
	}
	now := d.now()
	res := d.probe(ctx)
	healthy := len(res) > 0
	for _, r := range res {
		healthy = healthy && r.OK
	}
	if !healthy {
		d.healthySince = time.Time{}
		return
	}
	if d.healthySince.IsZero() {
		d.healthySince = now
	}
	if now.Sub(d.healthySince) < after {
		return
	}
	_, err = d.rem.Revert(context.WithoutCancel(ctx), false)
	d.decision("auto_revert", logwatch.Failure{}, 0,
		fmt.Sprintf("the responders have answered correctly since %s (policy.auto_revert_after %s)", d.healthySince.Format(time.RFC3339), shortDur(after)), err)
	d.healthySince = time.Time{}
	if err == nil {
		d.cutoff = now.Add(effectGrace)
		d.counter = newWindowCounter(d.policy())
	}
}

func (d *Daemon) policy() Policy {
	return Policy{Threshold: d.cfg.Policy.Threshold, Window: d.cfg.Policy.Window}
}

func (d *Daemon) mode() string {
	if d.dryRun {
		return "dry-run"
	}
	return d.cfg.Mode
}

// Start opens the log at its end, restores the policy's memory from the journal, finishes an
// interrupted remediation, and replays the last policy.window of history, so failures already
// logged count. Then Poll follows from where Start opened the file.
func (d *Daemon) Start(ctx context.Context) error {
	if _, err := d.follow.Start(-1); err != nil {
		d.followError(err)
	}
	d.start = d.now()
	d.restoreFromJournal()
	if d.mode() == "enforce" {
		if u, err := d.state.Unfinished(d.layout.Include); err == nil && u != nil {
			d.log.Warn().Str("action", u.Action).Str("step", u.Step).Msg("finishing an interrupted remediation")
			d.remediate(ctx, logwatch.Failure{}, 0, "finish_interrupted")
		}
	}
	from := d.start.Add(-d.cfg.Policy.Window)
	_, err := logwatch.ScanHistory(d.follow.Path, from, d.start, func(ev logwatch.Event) { d.handle(ctx, ev) })
	if err != nil {
		d.followError(fmt.Errorf("replay history: %w", err))
	}
	d.log.Info().Str("error_log", d.layout.ErrorLog).Str("mode", d.mode()).Int("threshold", d.cfg.Policy.Threshold).
		Str("window", shortDur(d.cfg.Policy.Window)).Int64("failures_replayed", d.Failures).Msg("following error_log")
	return nil
}

// restoreFromJournal: a restarted daemon keeps its cooldown and daily budget, so a crash loop
// cannot turn into a restart loop.
func (d *Daemon) restoreFromJournal() {
	entries, _ := d.state.Journal()
	now := d.now()
	for _, e := range entries {
		if e.File != d.layout.Include || e.Action != "remediate" || e.Step == "noop" || !e.terminal() {
			continue
		}
		if e.Time.After(d.lastAct) {
			d.lastAct = e.Time
		}
		if e.Step == "done" && e.Time.After(d.cutoff) {
			d.cutoff = e.Time.Add(effectGrace)
		}
		if now.Sub(e.Time) < day {
			d.acts = append(d.acts, e.Time)
		}
	}
}

// Poll reads what the log gained since the last poll.
func (d *Daemon) Poll(ctx context.Context) {
	d.follow.Poll(func(line []byte) {
		ev := logwatch.Classify(line)
		if ev.Kind == logwatch.KindNone || ev.Time.Before(d.start) {
			return // not ours, or replayed already
		}
		d.handle(ctx, ev)
	})
}

func (d *Daemon) handle(ctx context.Context, ev logwatch.Event) {
	f, ok := d.corr.Add(ev)
	if !ok || !f.Time.After(d.cutoff) {
		return
	}
	d.Failures++
	d.healthySince = time.Time{}
	n := d.counter.Add(f.Time)
	d.logSeen(f, n)
	if n >= d.cfg.Policy.Threshold {
		d.decide(ctx, f, n)
	}
}

func (d *Daemon) logSeen(f logwatch.Failure, n int) {
	now := d.now()
	if now.Sub(d.lastSeenLog) < seenLogEvery {
		d.suppressed++
		return
	}
	d.log.Info().Str("cause", string(f.Cause)).Str("responder", f.Responder).Int("failures_in_window", n).
		Int("similar_lines_suppressed", d.suppressed).Time("logged_at", f.Time).Msg("OCSP responder failure seen")
	d.lastSeenLog, d.suppressed = now, 0
}

// decide is called when the threshold is reached.
func (d *Daemon) decide(ctx context.Context, f logwatch.Failure, n int) {
	now := d.now()
	if !d.lastAct.IsZero() && now.Sub(d.lastAct) < d.cfg.Policy.Cooldown {
		d.reportOnce("cooldown", f, n, fmt.Sprintf("in cooldown until %s", d.lastAct.Add(d.cfg.Policy.Cooldown).Format(time.RFC3339)))
		return
	}
	kept := d.acts[:0]
	for _, t := range d.acts {
		if now.Sub(t) < day {
			kept = append(kept, t)
		}
	}
	d.acts = kept
	if len(d.acts) >= d.cfg.Policy.MaxPerDay {
		d.reportOnce("max_per_day", f, n, fmt.Sprintf("%d remediations in the last 24h (policy.max_per_day %d): only reporting", len(d.acts), d.cfg.Policy.MaxPerDay))
		return
	}
	// Reported "not effective" within the cooldown: say nothing, and skip the config walk
	// below, which would otherwise run for every failure on a busy host.
	if d.recent("not_effective", d.cfg.Policy.Cooldown) {
		return
	}
	// Stapling already off at global scope and failures keep coming: a restart cannot help,
	// unless httpd.conf does not read the include (remediate then rebuilds it in).
	if inc, err := os.ReadFile(d.layout.Path(d.layout.Include)); err == nil && apacheconf.InspectInclude(inc).StaplingOff {
		cfg, err := apacheconf.ReadConfig(d.layout)
		if err != nil || cfg.Includes(d.layout.Root, d.layout.Include) {
			detail := "fix not effective: stapling is already off in the include, yet failures continue"
			if err == nil {
				if o := overrideList(cfg); o != "" {
					detail += "; vhosts that turn it back on: " + o
				}
			}
			d.reportOnce("not_effective", f, n, detail)
			return
		}
	}
	if d.mode() == "dry-run" {
		d.lastAct = now
		d.decision("dry_run", f, n, "would remediate: turn stapling off in "+d.layout.Include, nil)
		return
	}
	d.remediate(ctx, f, n, "remediate")
}

func (d *Daemon) remediate(ctx context.Context, f logwatch.Failure, n int, kind string) {
	now := d.now()
	// A remediation runs to its end even if SIGTERM arrives: killing a restart halfway would
	// leave Apache in a worse state than finishing it (the unit's stop timeout still bounds it).
	_, err := d.rem.Remediate(context.WithoutCancel(ctx), false)
	d.lastAct = now
	var ee *ExitError
	if errors.As(err, &ee) && ee.Code == ExitRefused {
		// Refused (Must-Staple vhosts, include not wired on EA3, ...): nothing was changed,
		// so it does not spend the daily budget; the cooldown keeps the report from repeating.
		d.decision("refused", f, n, "", err)
		return
	}
	d.acts = append(d.acts, now)
	if err == nil {
		d.cutoff = now.Add(effectGrace)
		d.counter = newWindowCounter(d.policy())
	}
	d.decision(kind, f, n, "", err)
}

func (d *Daemon) reportOnce(kind string, f logwatch.Failure, n int, detail string) {
	if d.due(kind, d.cfg.Policy.Cooldown) {
		d.decision(kind, f, n, detail, nil)
	}
}

// recent reports whether a report of kind was made less than every ago.
func (d *Daemon) recent(kind string, every time.Duration) bool {
	t, ok := d.reports[kind]
	return ok && d.now().Sub(t) < every
}

// due says whether a report of kind may be made now (none in the last every), and if so
// marks it made.
func (d *Daemon) due(kind string, every time.Duration) bool {
	if d.recent(kind, every) {
		return false
	}
	d.reports[kind] = d.now()
	return true
}

// decision writes the one structured line each decision gets.
func (d *Daemon) decision(kind string, f logwatch.Failure, n int, detail string, err error) {
	d.Decisions = append(d.Decisions, kind)
	ev := d.log.Warn()
	result := "ok"
	if err != nil {
		ev, result = d.log.Error().Err(err), "failed"
	}
	ev = ev.Str("decision", kind).Str("mode", d.mode()).Int("failures_in_window", n).
		Int("threshold", d.cfg.Policy.Threshold).Str("window", shortDur(d.cfg.Policy.Window)).
		Str("cause", string(f.Cause)).Str("responder", f.Responder).Str("result", result)
	if detail != "" {
		ev = ev.Str("detail", detail)
	}
	ev.Msg("decision")
}

// followError logs at most once a minute: a missing log is retried every poll.
func (d *Daemon) followError(err error) {
	if d.due("follow_error", time.Minute) {
		d.log.Error().Err(err).Msg("cannot read error_log; retrying")
	}
}

// Run is the daemon's loop: poll, ping the watchdog while polls complete, reload the config on
// SIGHUP, stop on ctx (SIGTERM, SIGINT).
func (d *Daemon) Run(ctx context.Context, reload func() (*Config, error)) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	d.notify(sdaemon.SdNotifyReady)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	poll := time.NewTicker(logwatch.PollInterval)
	defer poll.Stop()
	var wd <-chan time.Time
	if every, err := sdaemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		wd = t.C
	}
	revertTick := time.NewTicker(autoRevertEvery)
	defer revertTick.Stop()
	lastPolls := int64(-1)
	for {
		select {
		case <-ctx.Done():
			d.notify(sdaemon.SdNotifyStopping)
			d.follow.Close()
			d.log.Info().Int64("lines", d.follow.Lines.Load()).Int64("failures", d.Failures).
				Int64("rotations", d.follow.Rotations.Load()).Int64("truncations", d.follow.Truncations.Load()).
				Int64("skipped_lines", d.follow.Skipped.Load()).Msg("stopped")
			return nil
		case <-hup:
			cfg, err := reload()
			if err != nil {
				d.log.Error().Err(err).Msg("config reload failed; keeping the old configuration")
				continue
			}
			d.cfg = cfg
			d.counter.window, d.counter.threshold = cfg.Policy.Window, cfg.Policy.Threshold
			d.log.Info().Str("mode", d.mode()).Msg("configuration reloaded")
		case <-poll.C:
			d.Poll(ctx)
		case <-revertTick.C:
			d.checkAutoRevert(ctx)
		case <-wd:
			// Only while the follow loop makes progress: a hung poll stops the pings and
			// systemd restarts us.
			if p := d.follow.Polls.Load(); p != lastPolls {
				lastPolls = p
				d.notify(sdaemon.SdNotifyWatchdog)
			}
		}
	}
}
