// Package daemon is `stapling-agent run`: a thin loop that follows error_log, classifies and
// counts, and hands every decision to one worker. The loop keeps the promises made to systemd
// (WATCHDOG=1 while it reads) and never waits on a remediation, a probe or a command; the
// worker asks policy.Decide, logs the decision and, when it says so, runs the same
// remediation `remediate` runs, one at a time. A decision to act first waits a random delay
// (policy.spread) on the loop's timer, with the worker free, and is then made again; while the
// fleet's pause file exists nothing is changed. The loop also keeps monotonic counters in
// node_exporter's textfile directory (metrics.go).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/frontend"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/remediate"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

const (
	// seenLogEvery limits the per-failure log line, so a dead responder on a busy host (one
	// failure per handshake) cannot flood the journal.
	seenLogEvery = 10 * time.Second
	// AutoRevertEvery is how often the responders are asked while stapling is off by our hand.
	AutoRevertEvery = 5 * time.Minute
	// factsTTL bounds how long the host facts are reused while no config file they were read
	// from has changed (a new file matching an IncludeOptional glob is seen within it).
	factsTTL = time.Minute
	// answeredTTL: a responder that answered a corroborating request is not asked again for
	// this long, so a flood of forged lines cannot make us hammer a CA's responder (at most 6
	// requests a minute each); a real outage that starts right after is seen within it.
	answeredTTL = 10 * time.Second
)

// Ticks drive the loop. Run's caller makes them from real tickers; tests send on them
// (as mtail's tests drive its waker), so the loop is tested without sleeping.
type Ticks struct {
	Poll     <-chan time.Time // read what the log gained (logwatch.PollInterval)
	Wake     <-chan struct{}  // an inotify wake-up: read now (nil: poll only)
	Watchdog <-chan time.Time // ping systemd's watchdog (nil: no watchdog)
	Revert   <-chan time.Time // auto-revert check (AutoRevertEvery)
	// Refresh keeps the host facts current while nothing happens (RefreshEvery), so the first
	// decision of an outage finds them read already: detection-to-write does not grow with
	// the size of the config.
	Refresh <-chan time.Time
}

// RefreshEvery is how often the idle worker makes sure the host facts are current (a stat of
// each file they were read from; a new reading only when one changed, or after factsTTL).
const RefreshEvery = factsTTL / 2

// refresh is the worker's job of keeping the facts current; not a decision.
const refresh policy.Kind = "refresh"

// Daemon follows error_log and applies the policy.
type Daemon struct {
	// Set by New, replaced on reload (loop goroutine only).
	env     *env.Env
	rem     *remediate.Remediator
	dryRun  bool // forced by --dry-run; otherwise the config's mode decides
	reload  func() (*env.Env, error)
	logPath string           // host path of the error log followed
	format  *logwatch.Format // its ErrorLogFormat; nil for Apache's default
	// Notify sends a state to systemd (sd_notify); nil does nothing.
	Notify func(string)
	// Probe asks the responders of the configured certificates (auto-revert); tests replace it.
	Probe func(ctx context.Context, l *apacheconf.Layout) []probe.ResponderResult
	// Ask asks one responder from this host (corroboration); tests replace it.
	Ask remediate.Asker
	// Spread (policy.spread): Rand picks the delay before acting, up to its argument; After
	// is the timer the loop waits on meanwhile. Tests replace both.
	Rand  func(max time.Duration) time.Duration
	After func(time.Duration) <-chan time.Time

	// The loop's own state.
	follow      *logwatch.Follower
	corr        logwatch.Correlator
	counter     *policy.Counter // failures that count, by responder, at arrival time
	foreign     *policy.Counter // failures naming responders no served certificate uses
	known       policy.Facts    // the facts failures are attributed with (from the worker)
	cutoff      time.Time       // failures at or before this do not count (our last restart's grace)
	start       time.Time       // lines the follower delivers from before this were replayed already
	lastFailure time.Time       // arrival of the last counted failure (auto-revert waits for quiet)
	want        *job            // the newest decision to make, waiting for the worker
	busy        bool            // the worker has a job
	stopping    bool
	jobs        chan job
	results     chan result
	lastSeenLog time.Time
	suppressed  int
	skewLogged  time.Time
	errorLogged time.Time
	// An Act decision waiting out its spread delay: the worker is free meanwhile, and the
	// decision is made again when spreadC fires (newer failures wait for that).
	spreadC    <-chan time.Time
	spreadJob  job
	metricsAt  time.Time // last metrics write
	metricsErr string    // last metrics problem logged

	// The worker's own state.
	mem          policy.Memory
	memDir       string                    // state directory mem was restored from
	reports      map[policy.Kind]time.Time // last time each kind of report was logged
	healthySince time.Time
	facts        factsCache

	answered map[string]time.Time // responders that answered a corroborating request, and when

	// Counters, safe to read while Run works.
	Failures atomic.Int64 // counted failures
	Skewed   atomic.Int64 // failure lines dated too far from their arrival: never counted
	Foreign  atomic.Int64 // failures naming responders no served certificate uses
	Readings atomic.Int64 // times the host facts were read anew (the config walked)
	mu       sync.Mutex
	decided  []policy.Kind
	counters *counters // for Prometheus (metrics.go)
}

// job is one thing for the worker: a decision, finishing an interrupted remediation, or an
// auto-revert check. It carries the environment of its time, so a reload never changes a job
// under way.
type job struct {
	kind        policy.Kind // Act: decide; FinishInterrupted; AutoRevert
	failure     logwatch.Failure
	n           int
	window      map[string]int // counted failures by responder key
	foreign     int
	env         *env.Env
	rem         *remediate.Remediator
	dryRun      bool
	lastFailure time.Time
	revert      bool // FinishInterrupted: the interrupted change was a revert (auto-revert)
	// Act after its spread delay: decide again, and act without another delay.
	recheck bool
	delay   time.Duration
}

// result is what the worker tells the loop.
type result struct {
	acted bool      // a remediation ran and succeeded: the window starts again
	at    time.Time // when
	facts *policy.Facts
	// wait: an Act decision to make again after this delay (policy.spread), for job.
	wait time.Duration
	job  job
}

// New builds the daemon for e. reload builds a new environment on SIGHUP.
func New(e *env.Env, dryRun bool, reload func() (*env.Env, error)) (*Daemon, error) {
	if _, err := e.RequireLayout(); err != nil {
		return nil, err
	}
	var err error
	d := &Daemon{
		env: e, dryRun: dryRun, reload: reload,
		Probe: func(ctx context.Context, l *apacheconf.Layout) []probe.ResponderResult {
			cfg, err := apacheconf.ReadConfig(l)
			if err != nil {
				return nil
			}
			return probe.Responders(ctx, probe.Targets(l, cfg, 0), 10*time.Second)
		},
		reports:  map[policy.Kind]time.Time{},
		answered: map[string]time.Time{},
		Ask:      remediate.AskFromHere,
		Rand:     randomDelay,
		After:    time.After,
		jobs:     make(chan job, 1),
		results:  make(chan result, 1),
		counters: newCounters(),
	}
	l := askApache(e)
	if d.rem, err = remediate.New(e, logLines{e.Log}); err != nil {
		return nil, err
	}
	// The daemon runs commands as root on its own: refuse to start over commands another
	// user could replace (a --root tree not owned by root, a group-writable script).
	if err := d.rem.Cmds.Trusted(l.Root); err != nil {
		return nil, &remediate.Error{Outcome: remediate.Refused, Err: err}
	}
	d.counter = &policy.Counter{Window: e.Config.Policy.Window}
	d.foreign = &policy.Counter{Window: e.Config.Policy.Window}
	d.facts.readings = &d.Readings
	d.facts.mode = e.Config.Policy.MustStaple
	// Follow the file Apache really writes (its ErrorLog), in the only format parsed. The
	// reading goes into the facts cache, so the start finds it there.
	a := d.facts.get(l, e.Now())
	logPath, format, err := a.ErrorLog(l)
	if err != nil {
		return nil, &remediate.Error{Outcome: remediate.Refused, Err: err}
	}
	d.logPath, d.format = logPath, format
	d.follow = &logwatch.Follower{Path: l.Path(logPath), OnError: d.followError}
	return d, nil
}

// askApache asks httpd once, read-only, and puts its answers in e's layout: its compiled-in
// modules and version drive the reading of the config (for the facts and for the remediation
// alike), and where its answers and the reading disagree, the daemon does not act.
func askApache(e *env.Env) *apacheconf.Layout {
	if err := e.AskApache(context.Background()); err != nil {
		e.Log.Warn().Err(err).Msg("could not ask httpd; reading the config with the defaults")
	}
	return e.Layout
}

// LogFile is the error log the daemon follows (a path on this machine).
func (d *Daemon) LogFile() string { return d.follow.Path }

// logLines turns the remediation's report for people into log lines.
type logLines struct{ log zerolog.Logger }

func (l logLines) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		l.log.Info().Msg(line)
	}
	return len(p), nil
}

func (d *Daemon) mode(e *env.Env, dryRun bool) policy.Mode {
	if dryRun {
		return policy.DryRunMode
	}
	return e.Config.Mode
}

// Decisions are the decisions logged so far, oldest first.
func (d *Daemon) Decisions() []policy.Kind {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]policy.Kind(nil), d.decided...)
}

// Run starts the worker, restores the policy's memory from the journal, opens the log at its
// end and replays the last policy window (so failures already logged count), sends READY=1,
// and then loops until ctx ends: poll on each tick or wake-up, ping the watchdog while polls
// complete, rebuild the environment on SIGHUP (hup), check auto-revert. On ctx's end it sends
// STOPPING=1 and returns once a remediation under way has finished (killing a restart halfway
// would leave Apache worse off).
func (d *Daemon) Run(ctx context.Context, t Ticks, hup <-chan os.Signal) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.work(ctx) }()
	defer func() { close(d.jobs); wg.Wait() }()

	d.begin(ctx)
	d.notify(sdaemon.SdNotifyReady)
	lastPolls := int64(-1)
	for {
		if d.stopping && !d.busy {
			if d.spreadC != nil {
				d.env.Log.Warn().Str("delay", policy.ShortDuration(d.spreadJob.delay)).Msg("stopping during the spread delay (policy.spread): not acting")
			}
			d.follow.Close()
			d.writeMetrics(d.env.Now())
			d.env.Log.Info().Int64("lines", d.follow.Lines.Load()).Int64("failures", d.Failures.Load()).
				Int64("rotations", d.follow.Rotations.Load()).Int64("truncations", d.follow.Truncations.Load()).
				Int64("skipped_lines", d.follow.Skipped.Load()).Msg("stopped")
			return nil
		}
		done := ctx.Done()
		if d.stopping {
			done = nil
		}
		select {
		case <-done:
			d.stopping = true
			d.notify(sdaemon.SdNotifyStopping)
		case r := <-d.results:
			d.finished(r)
		case <-hup:
			d.reloadEnv()
		case <-t.Poll:
			d.poll()
		case <-t.Wake:
			d.poll()
		case <-d.spreadC:
			d.spreadDue()
		case <-t.Refresh:
			if !d.busy && !d.stopping {
				d.send(job{kind: refresh})
			}
		case <-t.Revert:
			if !d.busy && !d.stopping && d.env.Config.Policy.AutoRevertAfter > 0 {
				d.send(job{kind: policy.AutoRevert, lastFailure: d.lastFailure})
			}
		case <-t.Watchdog:
			// Only while the follow loop makes progress: a hung read stops the pings and
			// systemd restarts us. A remediation runs in the worker and never stops them.
			if p := d.follow.Polls.Load(); p != lastPolls {
				lastPolls = p
				d.notify(sdaemon.SdNotifyWatchdog)
			}
		}
	}
}

func (d *Daemon) notify(s string) {
	if d.Notify != nil {
		d.Notify(s)
	}
}

// begin opens the log at its end, restores the memory, queues the finishing of an interrupted
// remediation, and replays the last policy window of history.
func (d *Daemon) begin(ctx context.Context) {
	e := d.env
	if _, err := d.follow.Start(-1); err != nil {
		d.followError(err)
	}
	d.start = e.Now()
	entries, _ := e.State.Journal()
	d.mem = state.Memory(entries, e.Layout.Include, d.start)
	d.memDir = e.State.Dir
	d.cutoff = d.mem.Cutoff
	if err := d.counters.load(e.State.Dir); err != nil {
		e.Log.Warn().Err(err).Msg("counters of the previous run unreadable; starting from zero (Prometheus sees a reset)")
	}
	// The served responders, to attribute failures from the first line on.
	d.known = d.facts.get(e.Layout, d.start).Facts
	if d.mode(e, d.dryRun) == policy.Enforce {
		if u, err := e.State.Unfinished(e.Layout.Include); err == nil && u != nil {
			e.Log.Warn().Str("action", string(u.Action)).Str("step", string(u.Step)).Msg("finishing an interrupted change")
			d.send(job{kind: policy.FinishInterrupted, revert: u.Action == state.Revert})
		}
	}
	from := d.start.Add(-e.Config.Policy.Window)
	replay := func(ev logwatch.Event) { d.handle(ev, ev.Time, false) }
	if _, err := logwatch.ScanHistoryFormat(ctx, d.follow.Path, d.format, from, d.start, replay); err != nil {
		d.followError(fmt.Errorf("replay history: %w", err))
	}
	e.Log.Info().Str("error_log", d.logPath).Str("mode", string(d.mode(e, d.dryRun))).Int("threshold", e.Config.Policy.Threshold).
		Str("window", policy.ShortDuration(e.Config.Policy.Window)).Int64("failures_replayed", d.Failures.Load()).
		Str("spread", policy.ShortDuration(e.Config.Policy.Spread)).Str("pause_file", e.Config.Policy.PauseFile).
		Str("textfile_dir", e.Config.Metrics.TextfileDir).Msg("following error_log")
	d.writeMetrics(e.Now())
}

// poll reads what the log gained since the last poll.
func (d *Daemon) poll() {
	d.follow.Poll(func(line []byte) {
		ev := d.format.Classify(line)
		if ev.Kind == logwatch.KindNone {
			return
		}
		arrival := d.env.Now()
		if skew := ev.Time.Sub(arrival); skew > policy.MaxSkew || skew < -policy.MaxSkew {
			if ev.Kind == logwatch.KindResponderFailure {
				d.skewed(ev, arrival)
			}
			return
		}
		if ev.Time.Before(d.start) {
			return // replayed already
		}
		d.handle(ev, arrival, true)
	})
	d.dispatch()
	if now := d.env.Now(); now.Sub(d.metricsAt) >= MetricsEvery || now.Before(d.metricsAt) {
		d.writeMetrics(now)
	}
}

// handle counts a failure at `at`: its arrival by our clock for live lines, the line's own
// time for the start-up replay (which reads only the last policy window of history). Live
// failures are also counted for Prometheus (the replayed ones were, by the run that read them).
func (d *Daemon) handle(ev logwatch.Event, at time.Time, live bool) {
	f, ok := d.corr.Add(ev)
	if !ok {
		return
	}
	key, served := d.known.Attribute(f.Responder)
	if live {
		d.counters.failure(string(f.Cause), key, served)
	}
	if !at.After(d.cutoff) {
		return
	}
	if !served {
		// Names a responder no served certificate uses: a tenant's certificate, or a forged
		// line. Reported, never counted.
		d.Foreign.Add(1)
		d.foreign.Add(at, f.Responder)
		d.logSeen(f, d.counter.Len(), "failure names a responder no served certificate uses; not counted")
		return
	}
	d.Failures.Add(1)
	d.lastFailure = d.env.Now()
	n := d.counter.Add(at, key)
	d.logSeen(f, n, "")
	if n >= d.env.Config.Policy.Threshold {
		d.want = &job{kind: policy.Act, failure: f, n: n}
		d.dispatch()
	}
}

// skewed reports a failure line dated too far from its arrival, at most once a minute.
func (d *Daemon) skewed(ev logwatch.Event, arrival time.Time) {
	d.Skewed.Add(1)
	if d.skewLogged.IsZero() || arrival.Sub(d.skewLogged) >= time.Minute {
		d.skewLogged = arrival
		d.env.Log.Warn().Time("logged_at", ev.Time).Time("arrived_at", arrival).Int64("skewed_lines", d.Skewed.Load()).
			Str("max_skew", policy.ShortDuration(policy.MaxSkew)).Msg("failure line dated too far from its arrival; not counted (a tenant's raw line, or a clock jump)")
	}
}

// finished takes the worker's result: after a remediation the window starts again, and
// failures before our restart's grace no longer count.
func (d *Daemon) finished(r result) {
	d.busy = false
	if r.facts != nil {
		d.known = *r.facts
	}
	if r.acted {
		d.cutoff = r.at.Add(policy.EffectGrace)
		d.counter.Reset()
		d.want = nil
	}
	if r.wait > 0 {
		d.spreadC, d.spreadJob = d.After(r.wait), r.job
		d.spreadJob.delay = r.wait
	}
	d.dispatch()
}

// spreadDue: the spread delay is over; the decision is made again on the failures counted
// now (newer ones included, expired ones gone), with the facts, the pause and the responders'
// answers of now.
func (d *Daemon) spreadDue() {
	d.spreadC = nil
	j := d.spreadJob
	if d.want != nil {
		j.failure = d.want.failure
	}
	j.recheck, j.n = true, d.counter.Len()
	d.want = &j
	d.dispatch()
}

// dispatch hands the newest pending decision to the worker when it is idle. While a decision
// waits out its spread delay, newer failures wait for it: it is made again on them.
func (d *Daemon) dispatch() {
	if d.want == nil || d.busy || d.stopping || d.spreadC != nil {
		return
	}
	j := *d.want
	d.want = nil
	d.send(j)
}

func (d *Daemon) send(j job) {
	j.env, j.rem, j.dryRun = d.env, d.rem, d.dryRun
	j.window, j.foreign = d.counter.ByKey(), d.foreign.Len()
	d.busy = true
	d.jobs <- j // never blocks: the worker is idle and the channel holds one
}

func (d *Daemon) logSeen(f logwatch.Failure, n int, note string) {
	now := d.env.Now()
	if now.Sub(d.lastSeenLog) < seenLogEvery {
		d.suppressed++
		return
	}
	ev := d.env.Log.Info().Str("cause", string(f.Cause)).Str("responder", f.Responder).Int("failures_in_window", n).
		Int("similar_lines_suppressed", d.suppressed).Time("logged_at", f.Time)
	if note != "" {
		ev = ev.Str("note", note)
	}
	ev.Msg("OCSP responder failure seen")
	d.lastSeenLog, d.suppressed = now, 0
}

// followError logs at most once a minute: a missing log is retried every poll.
func (d *Daemon) followError(err error) {
	if now := d.env.Now(); now.Sub(d.errorLogged) >= time.Minute || d.errorLogged.IsZero() {
		d.errorLogged = now
		d.env.Log.Error().Err(err).Msg("cannot read error_log; retrying")
	}
}

// reloadEnv rebuilds everything the configuration drives (SIGHUP): logger, policy, commands
// and their timeout, state directory, mode. A bad configuration keeps the old one.
func (d *Daemon) reloadEnv() {
	e, err := d.reload()
	if err == nil && e.Layout == nil {
		err = e.LayoutErr
	}
	var rem *remediate.Remediator
	if err == nil {
		askApache(e) // the new environment reads the config as Apache says too
		rem, err = remediate.New(e, logLines{e.Log})
	}
	if err == nil {
		err = rem.Cmds.Trusted(e.Layout.Root)
	}
	if err != nil {
		d.env.Log.Error().Err(err).Msg("config reload failed; keeping the old configuration")
		return
	}
	d.env, d.rem = e, rem
	// The facts are assessed for the new policy.must_staple (and the layout httpd described).
	d.facts.mode = e.Config.Policy.MustStaple
	d.facts.invalidate()
	d.counter.Window = e.Config.Policy.Window
	e.Log.Info().Str("mode", string(d.mode(e, d.dryRun))).Str("state_dir", e.Config.StateDir).
		Int("threshold", e.Config.Policy.Threshold).Str("window", policy.ShortDuration(e.Config.Policy.Window)).
		Str("commands_timeout", policy.ShortDuration(e.Config.Commands.Timeout)).Msg("configuration reloaded")
}

// work runs jobs one at a time until the channel closes.
func (d *Daemon) work(ctx context.Context) {
	for j := range d.jobs {
		d.results <- d.do(ctx, j)
	}
}

func (d *Daemon) do(ctx context.Context, j job) result {
	e := j.env
	if e.State.Dir != d.memDir {
		// state_dir changed on reload: what the new journal remembers counts too.
		entries, _ := e.State.Journal()
		d.mem = merge(d.mem, state.Memory(entries, e.Layout.Include, e.Now()))
		d.memDir = e.State.Dir
	}
	// A remediation runs to its end even if SIGTERM arrives: killing a restart halfway
	// would leave Apache in a worse state than finishing it (the unit's stop timeout still
	// bounds it).
	ctx = context.WithoutCancel(ctx)
	switch j.kind {
	case policy.FinishInterrupted:
		// Not held back by the fleet's pause: the include is written already, and leaving it
		// unapplied would let the next restart by anyone (cPanel's own) apply it unchecked.
		if j.revert {
			// An auto-revert killed partway is finished as a revert, not redone as a
			// remediation (that would restart Apache to turn stapling off again).
			_, err := j.rem.Revert(ctx, false)
			d.facts.invalidate()
			if err == nil {
				d.counters.revert()
			}
			d.log(j, policy.Decision{Kind: policy.FinishInterrupted, Reason: "a revert was interrupted; finishing it"}, err)
			return result{}
		}
		return d.remediate(ctx, j, policy.Decision{Kind: policy.FinishInterrupted, Reason: "a remediation was interrupted; finishing it"}, nil)
	case policy.AutoRevert:
		d.checkAutoRevert(ctx, j)
		return result{}
	case refresh:
		a := d.facts.get(e.Layout, e.Now())
		return result{facts: &a.Facts}
	}
	now := e.Now()
	a := d.facts.get(e.Layout, now)
	dec := a.Decide(ctx, policy.Input{
		Now: now, Mode: d.mode(e, j.dryRun), Params: e.Config.Params(), Window: j.window, Foreign: j.foreign, Memory: d.mem,
		Paused: e.Config.Paused(e.Root),
	}, d.ask)
	res := result{facts: &a.Facts}
	if j.recheck && dec.Kind != policy.Act {
		// The spread delay changed the answer (the outage is over, someone fixed it, a pause
		// came): said once, whatever the report throttle, since a decision to act was logged.
		dec.Reason = fmt.Sprintf("decided again after the spread delay (%s): %s", policy.ShortDuration(j.delay), dec.Reason)
		if dec.Kind == policy.DryRun {
			d.mem.LastAct = now
		}
		d.reports[dec.Kind] = now
		d.log(j, dec, nil)
		return res
	}
	switch dec.Kind {
	case policy.Act:
		if spread := e.Config.Policy.Spread; spread > 0 && !j.recheck {
			if delay := d.Rand(spread); delay > 0 {
				e.Log.Info().Str("delay", policy.ShortDuration(delay)).Str("spread", policy.ShortDuration(spread)).
					Time("act_at", now.Add(delay)).Int("failures_in_window", j.n).Str("detail", dec.Reason).
					Msg("outage confirmed; waiting a random delay (policy.spread) so the fleet does not restart together, then deciding again")
				res.wait, res.job = delay, j
				return res
			}
		}
		r := d.remediate(ctx, j, dec, a)
		r.facts = res.facts
		return r
	case policy.DryRun:
		d.mem.LastAct = now
		d.log(j, dec, nil)
	case policy.None:
	default:
		// Reports: once per cooldown each, so a long outage does not flood the journal.
		if t, ok := d.reports[dec.Kind]; !ok || now.Sub(t) >= e.Config.Policy.Cooldown {
			d.reports[dec.Kind] = now
			d.log(j, dec, nil)
		}
	}
	return res
}

// ask is Ask, except that a responder that answered less than answeredTTL ago is taken to
// answer still: a flood of forged lines must not turn into a flood of requests to a CA.
func (d *Daemon) ask(ctx context.Context, rawURL string, cf *probe.CertFile, timeout time.Duration, proxy string) probe.ResponderCheck {
	now := d.env.Now()
	if t, ok := d.answered[rawURL]; ok && now.Sub(t) < answeredTTL {
		return probe.ResponderCheck{URL: rawURL, Answers: true, Note: "answered at " + t.UTC().Format(time.RFC3339)}
	}
	c := d.Ask(ctx, rawURL, cf, timeout, proxy)
	if c.Answers {
		d.answered[rawURL] = now
	} else {
		delete(d.answered, rawURL)
	}
	return c
}

// remediate carries out an Act decision made on a (nil: plan afresh). The assessment's plan
// is reused, so the write follows the decision without reading the config again.
func (d *Daemon) remediate(ctx context.Context, j job, dec policy.Decision, a *remediate.Assessment) result {
	now := j.env.Now()
	j.rem.Affected = nil
	if dec.Affected != nil {
		j.rem.Affected = dec.Affected.VHosts // the journal gets the outage's impact
	}
	_, err := j.rem.RemediateAssessed(ctx, a)
	d.facts.invalidate()
	if remediate.IsRefused(err) {
		// Refused under the lock (the host changed since the facts were read): nothing was
		// changed, so it spends neither the cooldown nor the daily budget.
		d.log(j, policy.Decision{Kind: policy.Refused, Reason: dec.Reason}, err)
		return result{}
	}
	d.mem.LastAct = now
	d.mem.Acts = append(d.mem.Acts, now)
	d.counters.remediation(err)
	d.log(j, dec, err)
	return result{acted: err == nil, at: now}
}

// checkAutoRevert probes the responders while our block is in place; once all have answered
// correctly for policy.auto_revert_after with no failure meanwhile, it reverts with the same
// safety rules as `revert`.
func (d *Daemon) checkAutoRevert(ctx context.Context, j job) {
	e := j.env
	after := e.Config.Policy.AutoRevertAfter
	if after <= 0 || d.mode(e, j.dryRun) != policy.Enforce {
		return
	}
	inc, err := apacheconf.ReadFile(e.Layout.Path(e.Layout.Include), apacheconf.MaxConfigFile)
	if err != nil || !apacheconf.InspectInclude(inc).ManagedBlock {
		d.healthySince = time.Time{}
		return
	}
	res := d.Probe(ctx, e.Layout)
	now := e.Now()
	healthy := len(res) > 0
	for _, r := range res {
		healthy = healthy && r.OK
	}
	if !healthy {
		d.healthySince = time.Time{}
		return
	}
	if d.healthySince.IsZero() || j.lastFailure.After(d.healthySince) {
		d.healthySince = now
	}
	if now.Sub(d.healthySince) < after {
		return
	}
	if p := e.Config.Paused(e.Root); p != "" {
		// Reverting restarts Apache too. The healthy period goes on: the revert follows at
		// the first check after the pause is lifted.
		if t, ok := d.reports[policy.Paused]; !ok || now.Sub(t) >= e.Config.Policy.Cooldown {
			d.reports[policy.Paused] = now
			d.log(j, policy.Decision{Kind: policy.Paused, Reason: fmt.Sprintf("the responders have answered correctly since %s (policy.auto_revert_after %s), but paused: %s exists (fleet-wide pause), so stapling stays off until it is removed",
				d.healthySince.UTC().Format(time.RFC3339), policy.ShortDuration(after), p)}, nil)
		}
		return
	}
	_, err = j.rem.Revert(ctx, false)
	d.facts.invalidate()
	if err == nil {
		d.counters.revert()
	}
	d.log(j, policy.Decision{Kind: policy.AutoRevert, Reason: fmt.Sprintf("the responders have answered correctly since %s (policy.auto_revert_after %s)",
		d.healthySince.UTC().Format(time.RFC3339), policy.ShortDuration(after))}, err)
	d.healthySince = time.Time{}
}

// log writes the one structured line each decision gets.
func (d *Daemon) log(j job, dec policy.Decision, err error) {
	d.mu.Lock()
	d.decided = append(d.decided, dec.Kind)
	d.mu.Unlock()
	d.counters.decision(dec.Kind)
	e := j.env
	ev := e.Log.Warn()
	result := "ok"
	if err != nil {
		ev, result = e.Log.Error().Err(err), "failed"
	}
	ev.Str("decision", string(dec.Kind)).Str("mode", string(d.mode(e, j.dryRun))).Int("failures_in_window", j.n).
		Int("threshold", e.Config.Policy.Threshold).Str("window", policy.ShortDuration(e.Config.Policy.Window)).
		Str("cause", string(j.failure.Cause)).Str("responder", j.failure.Responder).Str("result", result).
		Str("detail", dec.Reason)
	if dec.Affected != nil {
		ev = ev.Strs("affected_responders", dec.Affected.Responders).Int("affected_vhosts", len(dec.Affected.VHosts)).
			Int("ssl_vhosts", dec.Affected.SSLVHosts).Strs("affected_accounts", dec.Affected.Accounts)
	}
	if j.recheck {
		ev = ev.Str("spread_delay", policy.ShortDuration(j.delay))
	}
	if dec.Checked != nil {
		var checked []string
		for _, c := range dec.Checked.Responders {
			checked = append(checked, fmt.Sprintf("%s answers=%v (%s)", c.URL, c.Answers, c.Detail))
		}
		ev = ev.Strs("checked", checked)
	}
	ev.Msg("decision")
}

// randomDelay is uniform in [0, max], in whole milliseconds.
func randomDelay(max time.Duration) time.Duration {
	return time.Duration(rand.Int64N(max.Milliseconds()+1)) * time.Millisecond
}

// merge is what two memories remember together.
func merge(a, b policy.Memory) policy.Memory {
	if b.LastAct.After(a.LastAct) {
		a.LastAct = b.LastAct
	}
	if b.Cutoff.After(a.Cutoff) {
		a.Cutoff = b.Cutoff
	}
	a.Acts = append(a.Acts, b.Acts...)
	return a
}

// factsCache keeps the host facts while no file they were read from has changed and they are
// younger than factsTTL: reading the config for every failure of a flood would make the worker
// slower than the failures, and a stat of each config file costs microseconds.
type factsCache struct {
	readings *atomic.Int64
	mode     config.MustStaple // policy.must_staple: the plan is the one a remediation makes
	a        *remediate.Assessment
	key      string
	files    []string // paths on this machine whose state the key records
	at       time.Time
}

func (c *factsCache) get(l *apacheconf.Layout, now time.Time) *remediate.Assessment {
	if c.files != nil && now.Sub(c.at) < factsTTL && statKey(c.files) == c.key {
		return c.a
	}
	a := remediate.AssessPlannedFor(l, c.mode)
	a.Facts.FrontEnd = frontEnd(l.Root)
	c.readings.Add(1)
	files := []string{l.Path(l.Include), l.Path(l.HTTPDConf)}
	dirs := map[string]bool{}
	if a.Config != nil {
		for _, f := range a.Config.Files {
			files = append(files, l.Path(f))
			// A file added to (or removed from) a directory a wildcard include reads changes
			// the directory's mtime, not any file read.
			if dir := filepath.Dir(l.Path(f)); !dirs[dir] {
				dirs[dir] = true
				files = append(files, dir)
			}
		}
	}
	c.a, c.files, c.key, c.at = &a, files, statKey(files), now
	return c.a
}

func (c *factsCache) invalidate() { c.files = nil }

// frontEnd is the server answering on the HTTPS port when it is not Apache (the policy then
// never restarts Apache for its backend's failures); "" for Apache, or when nothing tells.
// Read with the facts: a front end installed meanwhile is seen within factsTTL.
func frontEnd(root string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fe, err := frontend.Detect(ctx, root, nil)
	if err != nil || fe == nil {
		return ""
	}
	switch fe.Server {
	case frontend.ServerApache, frontend.ServerUnknown:
		return ""
	}
	return string(fe.Server)
}

// statKey records each file's identity, size and mtime; a missing file is recorded as such.
func statKey(files []string) string {
	var sb strings.Builder
	for _, f := range files {
		info, err := os.Stat(f)
		switch {
		case errors.Is(err, os.ErrNotExist):
			sb.WriteString("-\n")
		case err != nil:
			sb.WriteString("?\n")
		default:
			fmt.Fprintf(&sb, "%d %d %v\n", info.Size(), info.ModTime().UnixNano(), inode(info))
		}
	}
	return sb.String()
}

func inode(info os.FileInfo) uint64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
