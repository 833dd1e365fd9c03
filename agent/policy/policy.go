// Package policy decides what the daemon does about OCSP responder failures. Decide is a pure
// function of the failures counted, the daemon's memory (its last act, its acts in the last
// day, the cutoff after its own restart), the host facts (effective stapling, whether the
// include is wired and already turns stapling off, a refusal) and the mode: no I/O, no clock.
// The daemon calls it live; the audit's replay calls it over history with the same inputs, so
// the audit says "the daemon would act" exactly when the daemon would, and why not when not.
package policy

import (
	"fmt"
	"net"
	"sort"
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
	// Corroborate is not a final decision: before acting, ask the failing responders from this
	// host (Decision.Check names them) and decide again with the answers in Input.Check.
	Corroborate     Kind = "corroborate"
	NotCorroborated Kind = "not_corroborated" // the log shows failures, but the responders answer from here
	ScopedOut       Kind = "scoped_out"       // the failing responders serve too few vhosts to turn stapling off for all
	// NotClientFacing: NGINX, LiteSpeed or another server answers on the HTTPS port, not
	// Apache; its failures come from clients reaching Apache's backend port directly.
	NotClientFacing Kind = "not_client_facing"
	// Paused: the daemon would act (or, in dry-run, say it would), but the pause file fleet
	// tooling drops (policy.pause_file) exists.
	Paused Kind = "paused"

	// Made by the daemon outside Decide, logged with the same field.
	FinishInterrupted Kind = "finish_interrupted" // a remediation a crash interrupted, finished at start
	AutoRevert        Kind = "auto_revert"        // policy.auto_revert_after: the responders are healthy again
)

// Kinds are the final decisions the daemon logs (Corroborate is a step, not one), in the
// order the README lists them: a closed set, so each can be a metric label from the start.
var Kinds = []Kind{None, Act, DryRun, Cooldown, MaxPerDay, NotEffective, Refused, NotCorroborated, ScopedOut,
	NotClientFacing, Paused, FinishInterrupted, AutoRevert}

// Mode is the daemon's mode.
type Mode string

const (
	Enforce    Mode = "enforce"
	DryRunMode Mode = "dry-run"
)

// Day is the max_per_day period.
const Day = 24 * time.Hour

// MaxSkew: a failure line dated further than this from when it arrived (the daemon), or
// before a line already read or after now (the audit), was not written by Apache when it
// claims: a tenant's raw line, or a clock jump. Counted as skewed and reported, never put in
// a window.
const MaxSkew = 5 * time.Minute

// EffectGrace: handshakes already waiting on the responder when Apache restarts still log
// AH01941 for a moment; failures this soon after our remediation do not count against it.
const EffectGrace = 30 * time.Second

// Params are the configuration's policy keys.
type Params struct {
	Threshold int           // failures ...
	Window    time.Duration // ... within this window are an outage
	Cooldown  time.Duration // no act for this long after acting
	MaxPerDay int           // acts in any 24 hours
	// Blast radius: do not turn stapling off for the whole server when the failing
	// responders serve fewer than ScopeOutShare of its SSL vhosts, or (ScopeOutSingleAccount)
	// only one account's while other accounts have SSL vhosts. A host whose SSL vhosts all
	// depend on the failing responders is never scoped out.
	ScopeOutShare         float64
	ScopeOutSingleAccount bool
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
	// Responders are the OCSP responders named by the certificates SSL vhosts serve, with
	// who depends on each: only failures naming one of them (or naming none) count.
	Responders []Responder
	// SSLVHosts counts the SSL vhosts; Accounts are the accounts that own one.
	SSLVHosts int
	Accounts  []string
	// Proxy is the SSLOCSPProxyURL's host:port: mod_ssl's lines then name the proxy, so a
	// failure naming it may be any responder's.
	Proxy string
	// Exempted names the Must-Staple vhosts our per-vhost exemption keeps stapling for
	// (policy.must_staple exempt): their failures go on while their responder is down, by
	// design, and are not the global fix failing.
	Exempted []string
	// FrontEnd is the server that answers on the host's HTTPS port when it is not Apache
	// ("nginx", "litespeed", "other"); "" when it is Apache or cannot be told (then the
	// agent acts as it always has).
	FrontEnd string
}

// Responder is an OCSP responder that served certificates name, with who depends on it.
type Responder struct {
	URL      string   `json:"url"`
	Key      string   `json:"key"` // host:port as mod_ssl names it (see ResponderKey)
	VHosts   []string `json:"vhosts"`
	Accounts []string `json:"accounts"`
}

// ResponderKey is how a responder is named in error_log and matched to a certificate's OCSP
// URL: lower-case host and port, port 80 when not given (mod_ssl fetches OCSP over plain HTTP).
func ResponderKey(hostport string) string {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		h, p = strings.Trim(hostport, "[]"), "80"
	}
	return net.JoinHostPort(strings.ToLower(h), p)
}

// Attribute says which served responder a failure logged as naming `logged` is about: its key,
// "" for a failure that names no responder (or the proxy: it could be any), and ok false for a
// failure naming a responder no served certificate uses, which never counts (a tenant's
// certificate or a forged line can name anything). A name logged without a port (AH01972)
// matches by host.
func (f Facts) Attribute(logged string) (key string, ok bool) {
	if logged == "" {
		return "", true
	}
	k := ResponderKey(logged)
	if f.Proxy != "" && k == f.Proxy {
		return "", true
	}
	host, _, _ := net.SplitHostPort(k)
	_, _, err := net.SplitHostPort(logged)
	hasPort := err == nil
	for _, r := range f.Responders {
		if r.Key == k {
			return r.Key, true
		}
		if rh, _, _ := net.SplitHostPort(r.Key); !hasPort && rh == host {
			return r.Key, true
		}
	}
	return "", false
}

// Check is what the failing responders answered when asked from this host, as mod_ssl asks.
type Check struct {
	Responders []CheckResult `json:"responders"`
}

// CheckResult is one responder's answer: Answers when some address gave a correct OCSP
// response for a served certificate (mod_ssl would then have got one too).
type CheckResult struct {
	Key     string `json:"key"`
	URL     string `json:"url"`
	Answers bool   `json:"answers"`
	Detail  string `json:"detail"` // each address's outcome
}

// Input is everything Decide looks at.
type Input struct {
	Now    time.Time
	Mode   Mode
	Params Params
	// Window counts the failures within Params.Window ending at Now that count, by the key
	// Facts.Attribute gave them ("" for failures that name no responder).
	Window map[string]int
	// Foreign counts the failures in the window that name a responder no served certificate
	// uses: reported, never counted.
	Foreign int
	Memory  Memory
	Facts   Facts
	// Check is the corroboration, nil until Decide asked for it.
	Check *Check
	// Paused is the pause file (policy.pause_file) when it exists, "" otherwise: Decide
	// then says Paused where it would say Act or DryRun. It is an input, not a fact of
	// Apache's config, and read fresh for every decision, so the pause takes effect at once.
	Paused string
}

// Failures is the number of failures that count.
func (in Input) Failures() int {
	n := 0
	for _, c := range in.Window {
		n += c
	}
	return n
}

// Decision is Decide's answer and its reason, in words for the log and the audit.
type Decision struct {
	Kind   Kind   `json:"kind"`
	Reason string `json:"reason"`
	// Check lists the responders to ask (Kind Corroborate).
	Check []Responder `json:"check,omitempty"`
	// Affected names the vhosts and accounts that depend on the responders that failed
	// when asked (after corroboration).
	Affected *Affected `json:"affected,omitempty"`
	// Checked is the corroboration the decision rests on, when one was made.
	Checked *Check `json:"checked,omitempty"`
}

// Affected is the blast radius of the failing responders.
type Affected struct {
	Responders []string `json:"responders"`
	VHosts     []string `json:"vhosts"`
	Accounts   []string `json:"accounts"`
	SSLVHosts  int      `json:"ssl_vhosts"`
}

// Decide applies the policy. The order is the order of the questions an operator would ask:
// is it an outage of a responder this host's certificates use; would a change have any effect;
// can it be made safely; may we act again this soon; is the outage real when we ask the
// responders ourselves (nothing in error_log is proof: a tenant can write any line); does it
// concern enough of the server to turn stapling off for all of it; has the fleet paused us; and
// are we allowed to act.
// "Fix not effective" and refusals come before the cooldown, so they are reported even while
// the daemon is cooling down; the network check comes after the cheap ones.
func Decide(in Input) Decision {
	p, f := in.Params, in.Facts
	n := in.Failures()
	foreign := ""
	if in.Foreign > 0 {
		foreign = fmt.Sprintf("; %d more name responders no served certificate uses (not counted)", in.Foreign)
	}
	if n < p.Threshold {
		return Decision{Kind: None, Reason: fmt.Sprintf("%d responder failure%s within %s, below the threshold of %d%s",
			n, plural(n), ShortDuration(p.Window), p.Threshold, foreign)}
	}
	outage := fmt.Sprintf("%d responder failures within %s (threshold %d)%s", n, ShortDuration(p.Window), p.Threshold, foreign)
	switch {
	case f.FrontEnd != "":
		// Restarting Apache cannot change what visitors get from the front end, and NGINX
		// and LiteSpeed staple asynchronously: a dead responder does not stall them.
		return Decision{Kind: NotClientFacing, Reason: fmt.Sprintf("%s; but %s answers on the HTTPS port, not Apache: these are Apache's backend failures (clients reaching its port directly), and restarting Apache would not change what visitors get",
			outage, f.FrontEnd)}
	case f.IncludeOff && f.Wired:
		// A restart cannot help; the include is read and already says off.
		r := "fix not effective: stapling is already off in " + f.Include + ", yet failures continue"
		if f.Overrides != "" {
			r += "; vhosts that turn it back on: " + f.Overrides
		}
		if len(f.Exempted) > 0 {
			r += "; stapling is kept on by design for the Must-Staple vhosts " + list(f.Exempted) + " (policy.must_staple exempt): failures of their responder go on until it answers"
		}
		return Decision{Kind: NotEffective, Reason: r}
	case f.Refusal != "":
		return Decision{Kind: Refused, Reason: outage + ", but refused: " + f.Refusal}
	case !in.Memory.LastAct.IsZero() && in.Now.Sub(in.Memory.LastAct) < p.Cooldown:
		return Decision{Kind: Cooldown, Reason: fmt.Sprintf("%s; in cooldown until %s (policy.cooldown %s)",
			outage, in.Memory.LastAct.Add(p.Cooldown).UTC().Format(time.RFC3339), ShortDuration(p.Cooldown))}
	}
	if acts := in.Memory.ActsSince(in.Now.Add(-Day)); acts >= p.MaxPerDay {
		return Decision{Kind: MaxPerDay, Reason: fmt.Sprintf("%s; %d remediations in the last 24h (policy.max_per_day %d): only reporting", outage, acts, p.MaxPerDay)}
	}
	failing := in.failing()
	if in.Check == nil {
		return Decision{Kind: Corroborate, Reason: outage + "; asking the responders from this host", Check: failing}
	}
	down := map[string]bool{}
	var answering []string
	for _, c := range in.Check.Responders {
		if c.Answers {
			answering = append(answering, c.URL)
		} else {
			down[c.Key] = true
		}
	}
	if len(down) == 0 {
		return Decision{Kind: NotCorroborated, Reason: fmt.Sprintf("%s, but the responder%s answer%s correctly from this host now: not acting (%s)",
			outage, plural(len(answering)), map[bool]string{true: "", false: "s"}[len(answering) != 1], list(answering))}
	}
	aff := f.affected(down)
	d := Decision{Affected: aff}
	if why := p.scopedOut(aff, f); why != "" {
		d.Kind, d.Reason = ScopedOut, fmt.Sprintf("%s; %s fail%s from this host too, but %s: not turning stapling off for the whole server; affected: %s (accounts: %s)",
			outage, list(aff.Responders), map[bool]string{true: "", false: "s"}[len(aff.Responders) != 1], why, list(aff.VHosts), list(aff.Accounts))
		return d
	}
	confirmed := fmt.Sprintf("%s; %s fail%s from this host too (%d of %d SSL vhosts depend on %s)", outage, list(aff.Responders),
		map[bool]string{true: "", false: "s"}[len(aff.Responders) != 1], len(aff.VHosts), aff.SSLVHosts, map[bool]string{true: "it", false: "them"}[len(aff.Responders) == 1])
	if in.Paused != "" {
		// After the corroboration and the blast radius: the report says what the daemon
		// would do once the pause is lifted, not merely that failures were logged.
		d.Kind, d.Reason = Paused, confirmed+"; but paused: "+in.Paused+" exists (fleet-wide pause), so nothing is changed until it is removed"
		return d
	}
	if in.Mode == DryRunMode {
		d.Kind, d.Reason = DryRun, confirmed+"; would remediate: turn stapling off in "+f.Include
		return d
	}
	d.Kind, d.Reason = Act, confirmed+": turn stapling off in "+f.Include
	return d
}

// failing are the served responders the counted failures name; failures that name none (or
// the proxy) could be any of them, so then all are.
func (in Input) failing() []Responder {
	if in.Window[""] > 0 {
		return in.Facts.Responders
	}
	var out []Responder
	for _, r := range in.Facts.Responders {
		if in.Window[r.Key] > 0 {
			out = append(out, r)
		}
	}
	return out
}

// affected is the blast radius of the responders in down.
func (f Facts) affected(down map[string]bool) *Affected {
	a := &Affected{SSLVHosts: f.SSLVHosts}
	vh, acc := map[string]bool{}, map[string]bool{}
	for _, r := range f.Responders {
		if !down[r.Key] {
			continue
		}
		a.Responders = append(a.Responders, r.URL)
		for _, v := range r.VHosts {
			if !vh[v] {
				vh[v] = true
				a.VHosts = append(a.VHosts, v)
			}
		}
		for _, u := range r.Accounts {
			if !acc[u] {
				acc[u] = true
				a.Accounts = append(a.Accounts, u)
			}
		}
	}
	sort.Strings(a.VHosts)
	sort.Strings(a.Accounts)
	return a
}

// scopedOut says why the affected vhosts are too few to turn stapling off for all, or "".
func (p Params) scopedOut(a *Affected, f Facts) string {
	if len(a.VHosts) >= f.SSLVHosts {
		return "" // every SSL vhost depends on the failing responders
	}
	if p.ScopeOutSingleAccount && len(a.Accounts) == 1 && len(f.Accounts) > 1 {
		return fmt.Sprintf("only account %s depends on them while %d other accounts' SSL vhosts are unaffected", a.Accounts[0], len(f.Accounts)-1)
	}
	if share := float64(len(a.VHosts)) / float64(max(f.SSLVHosts, 1)); share < p.ScopeOutShare {
		return fmt.Sprintf("only %d of %d SSL vhosts (%.1f%%, under policy.scope_out_share %.1f%%) depend on them",
			len(a.VHosts), f.SSLVHosts, 100*share, 100*p.ScopeOutShare)
	}
	return ""
}

// list joins names for a reason, at most 10 of them.
func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

// Counter counts failures in the sliding window (t-Window, t], in total and by key (the
// responder Facts.Attribute named). It keeps only the entries inside the window, so memory is
// bounded by the failure rate, not by how long the outage lasts; a dead responder on a busy
// host logs a failure per handshake, so Add is amortised O(1): expired entries are skipped by
// moving a head index, and the slice is compacted only when the head passes its middle.
type Counter struct {
	Window  time.Duration
	entries []entry // sorted by time; entries[head:] are inside the window
	head    int
	byKey   map[string]int
	// Max is the most failures seen within one window.
	Max int
}

type entry struct {
	t   int64 // Unix nanoseconds
	key string
}

// Add records a failure at t for key and returns how many fall within the window ending at
// the latest time seen. Times slightly out of order are tolerated.
func (w *Counter) Add(t time.Time, key string) int {
	if w.byKey == nil {
		w.byKey = map[string]int{}
	}
	ns := t.UnixNano()
	// Keep entries sorted; out-of-order arrivals are rare and near the end.
	i := len(w.entries)
	for i > w.head && w.entries[i-1].t > ns {
		i--
	}
	w.entries = append(w.entries, entry{})
	copy(w.entries[i+1:], w.entries[i:])
	w.entries[i] = entry{ns, key}
	w.byKey[key]++
	latest := w.entries[len(w.entries)-1].t
	for w.head < len(w.entries) && w.entries[w.head].t <= latest-int64(w.Window) {
		k := w.entries[w.head].key
		if w.byKey[k]--; w.byKey[k] == 0 {
			delete(w.byKey, k)
		}
		w.head++
	}
	if w.head > len(w.entries)/2 {
		w.entries = append(w.entries[:0], w.entries[w.head:]...)
		w.head = 0
	}
	n := len(w.entries) - w.head
	w.Max = max(w.Max, n)
	return n
}

// Len is how many failures are in the window.
func (w *Counter) Len() int { return len(w.entries) - w.head }

// ByKey is a copy of the counts in the window by key.
func (w *Counter) ByKey() map[string]int {
	out := make(map[string]int, len(w.byKey))
	for k, v := range w.byKey {
		out[k] = v
	}
	return out
}

// Reset forgets every failure (after our own remediation: the window starts again).
func (w *Counter) Reset() { w.entries, w.head, w.byKey = w.entries[:0], 0, nil }

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
