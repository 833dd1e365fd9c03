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
		if got := w.Add(t0.Add(s.at), ""); got != s.want {
			t.Fatalf("step %d (+%s): count %d, want %d", i, s.at, got, s.want)
		}
	}
	if w.Max != 4 {
		t.Fatalf("max %d", w.Max)
	}
	w.Reset()
	if got := w.Add(t0.Add(26*time.Minute), ""); got != 1 {
		t.Fatalf("after Reset: %d", got)
	}
}

// A dead responder on a busy host: a million failures through a 10-minute window, one every
// millisecond, stays linear (this would take minutes if each Add copied the window).
func TestCounterManyFailures(t *testing.T) {
	w := &Counter{Window: 10 * time.Minute}
	t0 := time.Now()
	for i := 0; i < 1_000_000; i++ {
		w.Add(t0.Add(time.Duration(i)*time.Millisecond), "")
	}
	if n := w.Len(); n != 600_000 || w.Max != 600_000 {
		t.Fatalf("in window %d, max %d", n, w.Max)
	}
	if cap(w.entries) > 4*600_000 {
		t.Fatalf("memory not bounded by the window: cap %d", cap(w.entries))
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
	params := Params{Threshold: 3, Window: 10 * time.Minute, Cooldown: time.Hour, MaxPerDay: 2, ScopeOutShare: 0.05, ScopeOutSingleAccount: true}
	ca := Responder{URL: "http://ocsp.ca.example/", Key: "ocsp.ca.example:80", VHosts: []string{"a.example", "b.example"}, Accounts: []string{"alice", "bob"}}
	tenant := Responder{URL: "http://dead.example/", Key: "dead.example:80", VHosts: []string{"m.example"}, Accounts: []string{"mallory"}}
	on := Facts{Include: "/inc.conf", Effective: apacheconf.StaplingOn, Wired: true, Responders: []Responder{ca, tenant},
		SSLVHosts: 3, Accounts: []string{"alice", "bob", "mallory"}}
	many := on
	many.SSLVHosts = 100
	off := on
	off.Effective, off.IncludeOff = apacheconf.StaplingOff, true
	mixed := off
	mixed.Effective, mixed.Overrides = apacheconf.StaplingMixed, "b.example (/x.conf:3)"
	notWired := on
	notWired.IncludeOff, notWired.Wired = true, false
	refused := on
	refused.Refusal = "1 SSL vhost serves a Must-Staple certificate"
	behindNginx := on
	behindNginx.FrontEnd = "nginx"
	recent := Memory{LastAct: now.Add(-10 * time.Minute), Acts: []time.Time{now.Add(-10 * time.Minute)}}
	twoToday := Memory{LastAct: now.Add(-2 * time.Hour), Acts: []time.Time{now.Add(-5 * time.Hour), now.Add(-2 * time.Hour)}}
	yesterday := Memory{LastAct: now.Add(-25 * time.Hour), Acts: []time.Time{now.Add(-26 * time.Hour), now.Add(-25 * time.Hour)}}
	caDown := &Check{Responders: []CheckResult{{Key: ca.Key, URL: ca.URL}}}
	caUp := &Check{Responders: []CheckResult{{Key: ca.Key, URL: ca.URL, Answers: true}}}
	tenantDown := &Check{Responders: []CheckResult{{Key: tenant.Key, URL: tenant.URL}}}
	bothDown := &Check{Responders: []CheckResult{{Key: ca.Key, URL: ca.URL}, {Key: tenant.Key, URL: tenant.URL}}}
	atCA := map[string]int{ca.Key: 3}
	cases := []struct {
		name    string
		mode    Mode
		window  map[string]int
		foreign int
		mem     Memory
		facts   Facts
		check   *Check
		want    Kind
		reason  string
	}{
		{"below the threshold", Enforce, map[string]int{ca.Key: 2}, 0, Memory{}, on, nil, None, "below the threshold"},
		{"foreign failures are named, never counted", Enforce, map[string]int{ca.Key: 2}, 50, Memory{}, on, nil, None, "50 more name responders no served certificate uses"},
		{"outage: ask the responder first", Enforce, atCA, 0, Memory{}, on, nil, Corroborate, "asking the responders"},
		{"outage, the responder fails from here too", Enforce, atCA, 0, Memory{}, on, caDown, Act, "fails from this host too (2 of 3 SSL vhosts depend on it): turn stapling off in /inc.conf"},
		{"outage, dry-run", DryRunMode, atCA, 0, Memory{}, on, caDown, DryRun, "would remediate"},
		{"the log lies: the responder answers", Enforce, atCA, 0, Memory{}, on, caUp, NotCorroborated, "answers correctly from this host now: not acting (http://ocsp.ca.example/)"},
		{"one account's dead responder: scoped out", Enforce, map[string]int{tenant.Key: 5}, 0, Memory{}, on, tenantDown, ScopedOut, "only account mallory depends on them"},
		{"under 5% of the SSL vhosts: scoped out", Enforce, atCA, 0, Memory{}, many, caDown, ScopedOut, "only 2 of 100 SSL vhosts (2.0%"},
		{"every SSL vhost affected: never scoped out", Enforce, map[string]int{"": 3}, 0, Memory{}, on, bothDown, Act, "3 of 3 SSL vhosts"},
		{"include already off and wired", Enforce, map[string]int{ca.Key: 5}, 0, Memory{}, off, nil, NotEffective, "already off"},
		{"not effective names the overrides", Enforce, map[string]int{ca.Key: 5}, 0, Memory{}, mixed, nil, NotEffective, "b.example"},
		{"not effective is reported during a cooldown", Enforce, map[string]int{ca.Key: 5}, 0, recent, off, nil, NotEffective, "fix not effective"},
		{"off but not wired: act (the rebuild)", Enforce, atCA, 0, Memory{}, notWired, caDown, Act, "turn stapling off"},
		{"refused", Enforce, atCA, 0, Memory{}, refused, nil, Refused, "Must-Staple"},
		{"refused during a cooldown", Enforce, atCA, 0, recent, refused, nil, Refused, "Must-Staple"},
		{"cooldown", Enforce, atCA, 0, recent, on, nil, Cooldown, "in cooldown until 2026-11-21T12:50:00Z"},
		{"cooldown in dry-run too", DryRunMode, atCA, 0, recent, on, nil, Cooldown, "cooldown"},
		{"max per day", Enforce, atCA, 0, twoToday, on, nil, MaxPerDay, "2 remediations in the last 24h"},
		{"yesterday's acts do not count", Enforce, atCA, 0, yesterday, on, caDown, Act, ""},
		{"NGINX in front: Apache's failures are its backend's", Enforce, atCA, 0, Memory{}, behindNginx, caDown, NotClientFacing, "nginx answers on the HTTPS port, not Apache"},
		{"a front end is not client-facing Apache even below a refusal", Enforce, atCA, 0, Memory{}, func() Facts { f := refused; f.FrontEnd = "litespeed"; return f }(), nil, NotClientFacing, "litespeed"},
		{"below the threshold a front end changes nothing", Enforce, map[string]int{ca.Key: 2}, 0, Memory{}, behindNginx, nil, None, "below the threshold"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(Input{Now: now, Mode: c.mode, Params: params, Window: c.window, Foreign: c.foreign, Memory: c.mem, Facts: c.facts, Check: c.check})
			if d.Kind != c.want || !strings.Contains(d.Reason, c.reason) {
				t.Fatalf("Decide = %s %q, want %s containing %q", d.Kind, d.Reason, c.want, c.reason)
			}
		})
	}
	// Asked to corroborate, it names exactly the responders the failures name (all of them when
	// some failures name none).
	d := Decide(Input{Now: now, Mode: Enforce, Params: params, Window: atCA, Facts: on})
	if len(d.Check) != 1 || d.Check[0].Key != ca.Key {
		t.Fatalf("check %+v", d.Check)
	}
	d = Decide(Input{Now: now, Mode: Enforce, Params: params, Window: map[string]int{"": 3}, Facts: on})
	if len(d.Check) != 2 {
		t.Fatalf("unnamed failures: check %+v", d.Check)
	}
}

func TestAttribute(t *testing.T) {
	f := Facts{Responders: []Responder{{Key: ResponderKey("OCSP.CA.example")}, {Key: ResponderKey("127.0.0.1:8888")}, {Key: ResponderKey("[2001:db8::1]:80")}}, Proxy: ResponderKey("proxy.example:3128")}
	for logged, want := range map[string]string{
		"":                   "",                   // names none: could be any
		"ocsp.ca.example":    "ocsp.ca.example:80", // AH01972 names the host only
		"ocsp.ca.example:80": "ocsp.ca.example:80",
		"127.0.0.1:8888":     "127.0.0.1:8888",
		"[2001:db8::1]:80":   "[2001:db8::1]:80",
		"proxy.example:3128": "", // through SSLOCSPProxyURL: could be any
		"127.0.0.1:9999":     "foreign",
		"ocsp.ca.example:81": "foreign",
		"evil.example":       "foreign",
	} {
		key, ok := f.Attribute(logged)
		if !ok {
			key = "foreign"
		}
		if key != want {
			t.Errorf("Attribute(%q) = %q, want %q", logged, key, want)
		}
	}
}

func TestMemoryCounts(t *testing.T) {
	cut := time.Date(2026, 11, 21, 12, 0, 30, 0, time.UTC)
	m := Memory{Cutoff: cut}
	if m.Counts(cut) || !m.Counts(cut.Add(time.Nanosecond)) || !(Memory{}).Counts(cut) {
		t.Fatal("Counts: failures at or before the cutoff must not count, later ones must")
	}
}

// The fleet-wide pause replaces only acting: in enforce and dry-run mode alike the decision is
// paused, with the confirmed outage in its reason; everything decided before acting (below the
// threshold, refusals, cooldown, corroboration, the blast radius) is reported as without it.
func TestDecidePaused(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	params := Params{Threshold: 3, Window: 10 * time.Minute, Cooldown: time.Hour, MaxPerDay: 2, ScopeOutShare: 0.05, ScopeOutSingleAccount: true}
	ca := Responder{URL: "http://ocsp.ca.example/", Key: "ocsp.ca.example:80", VHosts: []string{"a.example", "b.example"}, Accounts: []string{"alice"}}
	on := Facts{Include: "/inc.conf", Effective: apacheconf.StaplingOn, Wired: true, Responders: []Responder{ca}, SSLVHosts: 2, Accounts: []string{"alice"}}
	refused := on
	refused.Refusal = "Must-Staple"
	many := on
	many.SSLVHosts = 100
	down := &Check{Responders: []CheckResult{{Key: ca.Key, URL: ca.URL}}}
	up := &Check{Responders: []CheckResult{{Key: ca.Key, URL: ca.URL, Answers: true}}}
	atCA := map[string]int{ca.Key: 3}
	const pause = "/etc/stapling-agent/pause"
	cases := []struct {
		name   string
		mode   Mode
		window map[string]int
		mem    Memory
		facts  Facts
		check  *Check
		want   Kind
		reason string
	}{
		{"would act: paused", Enforce, atCA, Memory{}, on, down, Paused, "2 of 2 SSL vhosts depend on it); but paused: /etc/stapling-agent/pause exists"},
		{"dry-run: paused too", DryRunMode, atCA, Memory{}, on, down, Paused, "fleet-wide pause"},
		{"still asks the responders first", Enforce, atCA, Memory{}, on, nil, Corroborate, "asking the responders"},
		{"the responder answers: not corroborated", Enforce, atCA, Memory{}, on, up, NotCorroborated, "not acting"},
		{"below the threshold", Enforce, map[string]int{ca.Key: 1}, Memory{}, on, nil, None, "below the threshold"},
		{"refused", Enforce, atCA, Memory{}, refused, nil, Refused, "Must-Staple"},
		{"cooldown", Enforce, atCA, Memory{LastAct: now.Add(-time.Minute)}, on, nil, Cooldown, "in cooldown"},
		{"scoped out", Enforce, atCA, Memory{}, many, down, ScopedOut, "only 2 of 100"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(Input{Now: now, Mode: c.mode, Params: params, Window: c.window, Memory: c.mem, Facts: c.facts, Check: c.check, Paused: pause})
			if d.Kind != c.want || !strings.Contains(d.Reason, c.reason) {
				t.Fatalf("Decide = %s %q, want %s containing %q", d.Kind, d.Reason, c.want, c.reason)
			}
		})
	}
	// Kinds is the closed set of final decisions: every kind Decide returns but Corroborate.
	seen := map[Kind]bool{}
	for _, k := range Kinds {
		if seen[k] || k == Corroborate {
			t.Fatalf("Kinds: %s twice or a step", k)
		}
		seen[k] = true
	}
	for _, k := range []Kind{None, Act, DryRun, Cooldown, MaxPerDay, NotEffective, Refused, NotCorroborated, ScopedOut, NotClientFacing, Paused, FinishInterrupted, AutoRevert} {
		if !seen[k] {
			t.Fatalf("Kinds lacks %s", k)
		}
	}
}
