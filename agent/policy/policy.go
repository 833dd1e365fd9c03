// Package policy decides what the daemon does about OCSP responder failures. Decide is a pure
// function of the failures counted, the daemon's memory (its last act, its acts in the last
// day, the cutoff after its own restart), the host facts (effective stapling, whether the
// include is wired and already turns stapling off, a refusal) and the mode: no I/O, no clock.
// The daemon calls it live; the audit's replay calls it over history with the same inputs, so
// the audit says "the daemon would act" exactly when the daemon would, and why not when not.
package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// Kind is what the daemon decides. The string values are the `decision` field of its log lines
// and of the audit's JSON.
type Kind string

const (
	None         Kind = "none"          // below the threshold
	Act          Kind = "remediate"     // turn stapling off now
	DryRun       Kind = "dry_run"       // would act, but the mode is dry-run
	Cooldown     Kind = "cooldown"      // acted less than policy.cooldown ago
	MaxPerDay    Kind = "max_per_day"   // policy.max_per_day acts in the last 24 hours
	NotEffective Kind = "not_effective" // the include already turns stapling off, yet failures go on
	Refused      Kind = "refused"       // the change cannot be made safely (Must-Staple, EA3 not wired, ...)

	// Made by the daemon outside Decide, logged with the same field.
	FinishInterrupted Kind = "finish_interrupted" // a remediation a crash interrupted, finished at start
	AutoRevert        Kind = "auto_revert"        // policy.auto_revert_after: the responders are healthy again
)

// Mode is the daemon's mode.
type Mode string

const (
	Enforce    Mode = "enforce"
	DryRunMode Mode = "dry-run"
)

// Day is the max_per_day period.
const Day = 24 * time.Hour

// EffectGrace: handshakes already waiting on the responder when Apache restarts still log
// AH01941 for a moment; failures this soon after our remediation do not count against it.
const EffectGrace = 30 * time.Second

// Params are the configuration's policy keys.
type Params struct {
	Threshold int           // failures ...
	Window    time.Duration // ... within this window are an outage
	Cooldown  time.Duration // no act for this long after acting
	MaxPerDay int           // acts in any 24 hours
}

// Memory is what the daemon remembers of its own acts. The daemon restores it from the
// journal at start (state.Memory), so a crash loop cannot turn into a restart loop; the audit
// builds it from the same journal.
type Memory struct {
	LastAct time.Time   // last remediation attempted (or dry-run report): cooldown runs from here
	Acts    []time.Time // remediations attempted, for max_per_day (older ones are ignored)
	Cutoff  time.Time   // failures at or before this do not count (our last restart + EffectGrace)
}

// Counts reports whether a failure logged at t counts: it is after our own last restart's grace.
func (m Memory) Counts(t time.Time) bool { return t.After(m.Cutoff) }

// ActsSince counts the acts after t.
func (m Memory) ActsSince(t time.Time) int {
	n := 0
	for _, a := range m.Acts {
		if a.After(t) {
			n++
		}
	}
	return n
}

// Facts are what the host's files say, read by remediate.Assess.
type Facts struct {
	Include    string              // host path of the pre-VirtualHost include
	Effective  apacheconf.Stapling // effective stapling now
	IncludeOff bool                // the include already turns stapling off at global scope
	Wired      bool                // httpd.conf reads the include at global scope
	// Refusal, when not empty, is why a remediation would be refused before writing: a
	// Must-Staple certificate would lose its staple, EA3 with the include not wired, the
	// config cannot be read, the include is not a regular file, ...
	Refusal string
	// Overrides names the SSL vhosts that turn stapling back on themselves.
	Overrides string
}

// Input is everything Decide looks at.
type Input struct {
	Now      time.Time
	Mode     Mode
	Params   Params
	Failures int // failures counted within Params.Window ending at Now
	Memory   Memory
	Facts    Facts
}

// Decision is Decide's answer and its reason, in words for the log and the audit.
type Decision struct {
	Kind   Kind   `json:"kind"`
	Reason string `json:"reason"`
}

// Decide applies the policy. The order is the order of the questions an operator would ask:
// is it an outage; would a change have any effect; can it be made safely; may we act again
// this soon; and are we allowed to act at all. "Fix not effective" and refusals come before
// the cooldown, so they are reported even while the daemon is cooling down.
func Decide(in Input) Decision {
	p, f := in.Params, in.Facts
	if in.Failures < p.Threshold {
		return Decision{None, fmt.Sprintf("%d responder failure%s within %s, below the threshold of %d",
			in.Failures, plural(in.Failures), ShortDuration(p.Window), p.Threshold)}
	}
	outage := fmt.Sprintf("%d responder failures within %s (threshold %d)", in.Failures, ShortDuration(p.Window), p.Threshold)
	switch {
	case f.IncludeOff && f.Wired:
		// A restart cannot help; the include is read and already says off.
		r := "fix not effective: stapling is already off in " + f.Include + ", yet failures continue"
		if f.Overrides != "" {
			r += "; vhosts that turn it back on: " + f.Overrides
		}
		return Decision{NotEffective, r}
	case f.Refusal != "":
		return Decision{Refused, outage + ", but refused: " + f.Refusal}
	case !in.Memory.LastAct.IsZero() && in.Now.Sub(in.Memory.LastAct) < p.Cooldown:
		return Decision{Cooldown, fmt.Sprintf("%s; in cooldown until %s (policy.cooldown %s)",
			outage, in.Memory.LastAct.Add(p.Cooldown).UTC().Format(time.RFC3339), ShortDuration(p.Cooldown))}
	}
	if n := in.Memory.ActsSince(in.Now.Add(-Day)); n >= p.MaxPerDay {
		return Decision{MaxPerDay, fmt.Sprintf("%s; %d remediations in the last 24h (policy.max_per_day %d): only reporting", outage, n, p.MaxPerDay)}
	}
	if in.Mode == DryRunMode {
		return Decision{DryRun, outage + "; would remediate: turn stapling off in " + f.Include}
	}
	return Decision{Act, outage + ": turn stapling off in " + f.Include}
}

// Counter counts failures in the sliding window (t-Window, t]. It keeps only the times inside
// the window (as Unix nanoseconds), so memory is bounded by the failure rate, not by how long
// the outage lasts; a dead responder on a busy host logs a failure per handshake, so Add is
// amortised O(1): expired times are skipped by moving a head index, and the slice is compacted
// only when the head passes its middle.
type Counter struct {
	Window time.Duration
	times  []int64 // sorted; times[head:] are inside the window
	head   int
	// Max is the most failures seen within one window.
	Max int
}

// Add records a failure at t and returns how many fall within the window ending at the latest
// time seen. Times slightly out of order (an older line after a newer one) are tolerated.
func (w *Counter) Add(t time.Time) int {
	ns := t.UnixNano()
	// Keep times sorted; out-of-order arrivals are rare and near the end.
	i := len(w.times)
	for i > w.head && w.times[i-1] > ns {
		i--
	}
	w.times = append(w.times, 0)
	copy(w.times[i+1:], w.times[i:])
	w.times[i] = ns
	latest := w.times[len(w.times)-1]
	for w.head < len(w.times) && w.times[w.head] <= latest-int64(w.Window) {
		w.head++
	}
	if w.head > len(w.times)/2 {
		w.times = append(w.times[:0], w.times[w.head:]...)
		w.head = 0
	}
	n := len(w.times) - w.head
	w.Max = max(w.Max, n)
	return n
}

// Reset forgets every failure (after our own remediation: the window starts again).
func (w *Counter) Reset() { w.times, w.head = w.times[:0], 0 }

// ShortDuration prints a duration the way an operator writes it in the config: 24h, 10m,
// 1m30s, 90ms; never "1m3" (time.Duration.String with its zero units trimmed).
func ShortDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d < time.Second || d%time.Second != 0 {
		return d.String()
	}
	var sb strings.Builder
	if d < 0 {
		sb.WriteByte('-')
		d = -d
	}
	h, m, s := d/time.Hour, (d%time.Hour)/time.Minute, (d%time.Minute)/time.Second
	if h > 0 {
		fmt.Fprintf(&sb, "%dh", h)
	}
	if m > 0 {
		fmt.Fprintf(&sb, "%dm", m)
	}
	if s > 0 {
		fmt.Fprintf(&sb, "%ds", s)
	}
	return sb.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
