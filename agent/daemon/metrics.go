package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// The daemon's counters for Prometheus, as node_exporter's textfile collector reads them: a
// *.prom file in metrics.textfile_dir, replaced atomically (temp file + rename, so the
// collector never reads half a file), without timestamps (FACTS.md sections 9 and 16). The
// audit timer writes its gauges to stapling_agent.prom in the same directory; two writers,
// two files. Counters only grow while the daemon runs and are carried across restarts in the
// state directory, so rate() and increase() see a reset only when that file is lost, and
// stapling_agent_daemon_start_time_seconds says when one may have happened.
const (
	// DaemonTextfile is the daemon's file in metrics.textfile_dir.
	DaemonTextfile = "stapling_agent_daemon.prom"
	// MetricsEvery is how often, at most, the file is written (and at exit): a common scrape
	// interval, and a few hundred bytes each time.
	MetricsEvery = 15 * time.Second
	// countersFile keeps the counters in the state directory across restarts.
	countersFile = "counters.json"
	// maxCountersFile bounds its reading: a full one (10 causes by 13 responder labels) is
	// under 4 KiB.
	maxCountersFile = 64 << 10
	// maxResponderSeries responders get a series of their own, the first ones to fail; the
	// rest are summed as "other". Ranking by count, as the audit's gauges do, would move
	// counts from one series to another and break the counters' monotonicity; a host's
	// certificates name a handful of responders, so ten first-come places are enough, and a
	// tenant's certificate naming a new responder each day cannot grow the series.
	maxResponderSeries = 10
	// maxLabel is the longest label value written whole (a DNS name is at most 253 bytes,
	// responders in the wild are under 64).
	maxLabel = 128
)

// The responder label of failures that have none of their own.
const (
	responderOther   = "other"   // a served responder beyond the first maxResponderSeries
	responderUnknown = "unknown" // the failure names no responder (or names the OCSP proxy)
	responderForeign = "foreign" // names a responder no served certificate uses: never counted by the policy
)

// remediation results, the label of stapling_agent_remediations_total.
const (
	resultOK     = "ok"
	resultFailed = "failed"
)

// counterValues are the counters as kept in the state directory.
type counterValues struct {
	Failures     map[string]map[string]int64 `json:"failures"`   // cause, then responder label
	Responders   []string                    `json:"responders"` // labels with a series of their own
	Decisions    map[policy.Kind]int64       `json:"decisions"`
	Remediations map[string]int64            `json:"remediations"` // by result
	Reverts      int64                       `json:"reverts"`
	LogLines     int64                       `json:"log_lines"`
}

// counters are the daemon's monotonic counters; the loop counts failures and lines, the
// worker decisions, remediations and reverts.
type counters struct {
	mu        sync.Mutex
	v         counterValues
	linesBase int64 // lines read before this run; the follower counts this run's
}

func newCounters() *counters {
	c := &counters{}
	c.v = counterValues{Failures: map[string]map[string]int64{}, Decisions: map[policy.Kind]int64{}, Remediations: map[string]int64{}}
	return c
}

// failure counts a failure of cause naming responder key (as Facts.Attribute gave it).
func (c *counters) failure(cause, key string, served bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	label := responderUnknown
	switch {
	case !served:
		label = responderForeign
	case key != "":
		label = c.responderLabel(labelText(key))
	}
	if c.v.Failures[cause] == nil {
		c.v.Failures[cause] = map[string]int64{}
	}
	c.v.Failures[cause][label]++
}

// responderLabel is l when l has (or gets) a series of its own, else "other".
func (c *counters) responderLabel(l string) string {
	for _, r := range c.v.Responders {
		if r == l {
			return l
		}
	}
	if len(c.v.Responders) < maxResponderSeries {
		c.v.Responders = append(c.v.Responders, l)
		return l
	}
	return responderOther
}

func (c *counters) decision(k policy.Kind) {
	c.mu.Lock()
	c.v.Decisions[k]++
	c.mu.Unlock()
}

func (c *counters) remediation(err error) {
	c.mu.Lock()
	if err == nil {
		c.v.Remediations[resultOK]++
	} else {
		c.v.Remediations[resultFailed]++
	}
	c.mu.Unlock()
}

func (c *counters) revert() {
	c.mu.Lock()
	c.v.Reverts++
	c.mu.Unlock()
}

// snapshot is a deep copy with LogLines the total including this run's lines.
func (c *counters) snapshot(lines int64) counterValues {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := counterValues{Failures: map[string]map[string]int64{}, Responders: append([]string(nil), c.v.Responders...),
		Decisions: map[policy.Kind]int64{}, Remediations: map[string]int64{}, Reverts: c.v.Reverts, LogLines: c.linesBase + lines}
	for cause, m := range c.v.Failures {
		s.Failures[cause] = map[string]int64{}
		for k, n := range m {
			s.Failures[cause][k] = n
		}
	}
	for k, n := range c.v.Decisions {
		s.Decisions[k] = n
	}
	for k, n := range c.v.Remediations {
		s.Remediations[k] = n
	}
	return s
}

// load takes the counters a previous run left in dir. A missing file starts from zero; a
// file that is not ours (too large, not a regular file, not our JSON, negative counts, labels
// we never write) is ignored whole and the error returned: Prometheus then sees a reset.
func (c *counters) load(dir string) error {
	p := filepath.Join(dir, countersFile)
	b, err := readSmall(p, maxCountersFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var v counterValues
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if err := v.valid(); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.v = v
	if c.v.Failures == nil {
		c.v.Failures = map[string]map[string]int64{}
	}
	if c.v.Decisions == nil {
		c.v.Decisions = map[policy.Kind]int64{}
	}
	if c.v.Remediations == nil {
		c.v.Remediations = map[string]int64{}
	}
	c.linesBase = v.LogLines
	return nil
}

func (v counterValues) valid() error {
	if len(v.Responders) > maxResponderSeries {
		return fmt.Errorf("%d responder series, at most %d", len(v.Responders), maxResponderSeries)
	}
	labels := map[string]bool{responderOther: true, responderUnknown: true, responderForeign: true}
	for _, r := range v.Responders {
		if r != labelText(r) || labels[r] {
			return fmt.Errorf("responder label %q", r)
		}
		labels[r] = true
	}
	if len(v.Failures) > 64 {
		return fmt.Errorf("%d causes", len(v.Failures))
	}
	for cause, m := range v.Failures {
		if cause != labelText(cause) {
			return fmt.Errorf("cause %q", cause)
		}
		for k, n := range m {
			if !labels[k] || n < 0 {
				return fmt.Errorf("failures{cause=%q,responder=%q} = %d", cause, k, n)
			}
		}
	}
	kinds := map[policy.Kind]bool{}
	for _, k := range policy.Kinds {
		kinds[k] = true
	}
	for k, n := range v.Decisions {
		if !kinds[k] || n < 0 {
			return fmt.Errorf("decisions{kind=%q} = %d", k, n)
		}
	}
	for k, n := range v.Remediations {
		if (k != resultOK && k != resultFailed) || n < 0 {
			return fmt.Errorf("remediations{result=%q} = %d", k, n)
		}
	}
	if v.Reverts < 0 || v.LogLines < 0 {
		return errors.New("negative count")
	}
	return nil
}

// readSmall reads a regular file of at most max bytes.
func readSmall(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", p, max)
	}
	return b, nil
}

// exposition is the text format (0.0.4) of v: every decision kind and remediation result
// from zero, so increase() sees the first one; series in a fixed order.
func exposition(v counterValues, start time.Time, paused bool) []byte {
	var sb strings.Builder
	metric := func(name, help, typ string) {
		fmt.Fprintf(&sb, "# HELP stapling_agent_%s %s\n# TYPE stapling_agent_%s %s\n", name, help, name, typ)
	}
	metric("daemon_start_time_seconds", "When the daemon started (Unix time); its counters carry over restarts in the state directory.", "gauge")
	fmt.Fprintf(&sb, "stapling_agent_daemon_start_time_seconds %d\n", start.Unix())
	metric("paused", "Whether the pause file (policy.pause_file) exists: the daemon decides and reports but never acts.", "gauge")
	fmt.Fprintf(&sb, "stapling_agent_paused %d\n", map[bool]int{true: 1}[paused])
	metric("daemon_responder_failures_total", "OCSP responder failures (AH01941) the daemon read from error_log, by cause and responder (the first 10 served responders to fail; other: the rest; unknown: none named; foreign: no served certificate uses it).", "counter")
	causes := make([]string, 0, len(v.Failures))
	for cause := range v.Failures {
		causes = append(causes, cause)
	}
	sort.Strings(causes)
	for _, cause := range causes {
		keys := make([]string, 0, len(v.Failures[cause]))
		for k := range v.Failures[cause] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&sb, "stapling_agent_daemon_responder_failures_total{cause=%s,responder=%s} %d\n", label(cause), label(k), v.Failures[cause][k])
		}
	}
	metric("decisions_total", "Decisions the daemon logged, by kind.", "counter")
	for _, k := range policy.Kinds {
		fmt.Fprintf(&sb, "stapling_agent_decisions_total{kind=%s} %d\n", label(string(k)), v.Decisions[k])
	}
	metric("remediations_total", "Remediations (stapling turned off, Apache restarted) the daemon ran, by result.", "counter")
	for _, k := range []string{resultOK, resultFailed} {
		fmt.Fprintf(&sb, "stapling_agent_remediations_total{result=%s} %d\n", label(k), v.Remediations[k])
	}
	metric("reverts_total", "Reverts (stapling back on) the daemon completed: policy.auto_revert_after, or an interrupted revert finished.", "counter")
	fmt.Fprintf(&sb, "stapling_agent_reverts_total %d\n", v.Reverts)
	metric("log_lines_total", "Lines of error_log the daemon read.", "counter")
	fmt.Fprintf(&sb, "stapling_agent_log_lines_total %d\n", v.LogLines)
	return []byte(sb.String())
}

// labelText is v as a label value may hold it: valid UTF-8 and at most maxLabel bytes (cut at
// a rune boundary).
func labelText(v string) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	if len(v) <= maxLabel {
		return v
	}
	i := maxLabel
	for i > 0 && !utf8.RuneStart(v[i]) {
		i--
	}
	return v[:i]
}

// label quotes a label value as the exposition format escapes it: backslash, double quote and
// newline only (Go's %q escapes more, and the textfile collector would drop the whole file).
func label(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(labelText(v)) + `"`
}

// writeAtomic replaces dir/name with data: a temp file in the same directory (named so that
// the textfile collector, which reads *.prom, skips it), chmod, write, rename.
func writeAtomic(dir, name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// Explicit: the unit's UMask=0077 would leave the file unreadable to node_exporter.
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// writeMetrics writes the textfile and keeps the counters in the state directory. Called by
// the loop at most every MetricsEvery, after the start-up replay and at exit: a local file of
// a few hundred bytes, never a command or a network call. Nothing is written while
// metrics.textfile_dir is "" or does not exist; the state directory is never created for it
// (a dry run creates nothing).
func (d *Daemon) writeMetrics(now time.Time) {
	d.metricsAt = now
	e := d.env
	if e.Config.Metrics.TextfileDir == "" {
		return
	}
	dir := apacheconf.HostPath(e.Root, e.Config.Metrics.TextfileDir)
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.metricsProblem(fmt.Errorf("metrics.textfile_dir %s does not exist (node_exporter not installed?); not writing counters", e.Config.Metrics.TextfileDir), false)
		return
	case err == nil && !info.IsDir():
		err = fmt.Errorf("metrics.textfile_dir %s is not a directory", e.Config.Metrics.TextfileDir)
	}
	v := d.counters.snapshot(d.follow.Lines.Load())
	if err == nil {
		err = writeAtomic(dir, DaemonTextfile, exposition(v, d.start, e.Config.Paused(e.Root) != ""), 0o644)
	}
	if err == nil {
		if st, serr := os.Stat(e.State.Dir); serr == nil && st.IsDir() {
			b, _ := json.Marshal(v)
			err = writeAtomic(e.State.Dir, countersFile, b, 0o600)
		}
	}
	if err != nil {
		d.metricsProblem(err, true)
		return
	}
	d.metricsErr = ""
}

// metricsProblem logs a problem once until it changes or a write succeeds.
func (d *Daemon) metricsProblem(err error, warn bool) {
	if err.Error() == d.metricsErr {
		return
	}
	d.metricsErr = err.Error()
	if warn {
		d.env.Log.Warn().Err(err).Msg("cannot write the metrics textfile; retrying")
		return
	}
	d.env.Log.Info().Msg(err.Error())
}
