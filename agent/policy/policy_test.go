package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

func TestCounter(t *testing.T) {
	w := &Counter{Window: 10 * time.Minute}
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		want int
	}{
		{0, 1}, {time.Minute, 2}, {9 * time.Minute, 3},
		{10 * time.Minute, 3}, // t0 drops out: the window is (t-10m, t]
		{30 * time.Second, 4}, // a late line, inside the window (0, 10m] ending at the latest
		{25 * time.Minute, 1}, // everything else expired
		{25*time.Minute + time.Second, 2},
	}
	for i, s := range steps {
		if got := w.Add(t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d (+%s): count %d, want %d", i, s.at, got, s.want)
		}
	}
	if w.Max != 4 {
		t.Fatalf("max %d", w.Max)
	}
	w.Reset()
	if got := w.Add(t0.Add(26 * time.Minute)); got != 1 {
		t.Fatalf("after Reset: %d", got)
	}
}

// A dead responder on a busy host: a million failures through a 10-minute window, one every
// millisecond, stays linear (this would take minutes if each Add copied the window).
func TestCounterManyFailures(t *testing.T) {
	w := &Counter{Window: 10 * time.Minute}
	t0 := time.Now()
	for i := 0; i < 1_000_000; i++ {
		w.Add(t0.Add(time.Duration(i) * time.Millisecond))
	}
	if n := len(w.times) - w.head; n != 600_000 || w.Max != 600_000 {
		t.Fatalf("in window %d, max %d", n, w.Max)
	}
	if cap(w.times) > 4*600_000 {
		t.Fatalf("memory not bounded by the window: cap %d", cap(w.times))
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                  "0s",
		30 * time.Second:                   "30s",
		90 * time.Second:                   "1m30s",
		10 * time.Minute:                   "10m",
		time.Hour:                          "1h",
		24 * time.Hour:                     "24h",
		time.Hour + 30*time.Second:         "1h30s",
		2*time.Hour + 3*time.Minute:        "2h3m",
		1500 * time.Millisecond:            "1.5s",
		250 * time.Millisecond:             "250ms",
		-90 * time.Second:                  "-1m30s",
		100*time.Hour + 10*time.Minute:     "100h10m",
		time.Minute + 500*time.Millisecond: "1m0.5s",
	} {
		if got := ShortDuration(d); got != want {
			t.Errorf("ShortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestDecide is the policy's table: each row a host state, the decision and a word of its
// reason. The daemon and the audit both call Decide; agree_test.go in the daemon package runs
// both over host states and asserts they agree.
func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	params := Params{Threshold: 3, Window: 10 * time.Minute, Cooldown: time.Hour, MaxPerDay: 2}
	on := Facts{Include: "/inc.conf", Effective: apacheconf.StaplingOn, Wired: true}
	off := Facts{Include: "/inc.conf", Effective: apacheconf.StaplingOff, Wired: true, IncludeOff: true}
	mixed := Facts{Include: "/inc.conf", Effective: apacheconf.StaplingMixed, Wired: true, IncludeOff: true, Overrides: "b.example (/x.conf:3)"}
	notWired := Facts{Include: "/inc.conf", Effective: apacheconf.StaplingOn, IncludeOff: true}
	refused := on
	refused.Refusal = "1 SSL vhost serves a Must-Staple certificate"
	recent := Memory{LastAct: now.Add(-10 * time.Minute), Acts: []time.Time{now.Add(-10 * time.Minute)}}
	twoToday := Memory{LastAct: now.Add(-2 * time.Hour), Acts: []time.Time{now.Add(-5 * time.Hour), now.Add(-2 * time.Hour)}}
	yesterday := Memory{LastAct: now.Add(-25 * time.Hour), Acts: []time.Time{now.Add(-26 * time.Hour), now.Add(-25 * time.Hour)}}
	cases := []struct {
		name     string
		mode     Mode
		failures int
		mem      Memory
		facts    Facts
		want     Kind
		reason   string
	}{
		{"below the threshold", Enforce, 2, Memory{}, on, None, "below the threshold"},
		{"outage, stapling on", Enforce, 3, Memory{}, on, Act, "turn stapling off in /inc.conf"},
		{"outage, dry-run", DryRunMode, 3, Memory{}, on, DryRun, "would remediate"},
		{"include already off and wired", Enforce, 5, Memory{}, off, NotEffective, "already off"},
		{"not effective names the overrides", Enforce, 5, Memory{}, mixed, NotEffective, "b.example"},
		{"not effective is reported during a cooldown", Enforce, 5, recent, off, NotEffective, "fix not effective"},
		{"off but not wired: act (the rebuild)", Enforce, 3, Memory{}, notWired, Act, "turn stapling off"},
		{"refused", Enforce, 3, Memory{}, refused, Refused, "Must-Staple"},
		{"refused during a cooldown", Enforce, 3, recent, refused, Refused, "Must-Staple"},
		{"cooldown", Enforce, 3, recent, on, Cooldown, "in cooldown until 2026-11-21T12:50:00Z"},
		{"cooldown in dry-run too", DryRunMode, 3, recent, on, Cooldown, "cooldown"},
		{"max per day", Enforce, 3, twoToday, on, MaxPerDay, "2 remediations in the last 24h"},
		{"yesterday's acts do not count", Enforce, 3, yesterday, on, Act, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(Input{Now: now, Mode: c.mode, Params: params, Failures: c.failures, Memory: c.mem, Facts: c.facts})
			if d.Kind != c.want || !strings.Contains(d.Reason, c.reason) {
				t.Fatalf("Decide = %s %q, want %s containing %q", d.Kind, d.Reason, c.want, c.reason)
			}
		})
	}
}

func TestMemoryCounts(t *testing.T) {
	cut := time.Date(2026, 11, 21, 12, 0, 30, 0, time.UTC)
	m := Memory{Cutoff: cut}
	if m.Counts(cut) || !m.Counts(cut.Add(time.Nanosecond)) || !(Memory{}).Counts(cut) {
		t.Fatal("Counts: failures at or before the cutoff must not count, later ones must")
	}
}
