package logwatch

import "time"

// JoinWindow is how far apart a transport line and its AH01941 may be. mod_ssl writes them
// microseconds apart from the same worker (FACTS.md section 3); 2 s tolerates a loaded host.
const JoinWindow = 2 * time.Second

// Failure is one responder failure (AH01941) with the cause its worker logged just before.
type Failure struct {
	Time      time.Time
	Cause     Cause
	Responder string // "" when not logged
	Proc      string
}

// Correlator joins transport lines to the AH01941 that follows from the same pid/tid.
// The first transport line of a failed renewal is the root cause: the read timeout (AH01977)
// is followed by "bad response: (none)" (AH01980), which is only its consequence.
type Correlator struct {
	pending map[string]Event
}

// maxPending bounds the pending map on a host with many workers; stale entries go first.
const maxPending = 4096

// Add feeds one event; it returns a Failure when ev is a responder failure.
func (c *Correlator) Add(ev Event) (Failure, bool) {
	if c.pending == nil {
		c.pending = make(map[string]Event)
	}
	switch ev.Kind {
	case KindTransport:
		prev, ok := c.pending[ev.Proc]
		if ok && fresh(prev, ev.Time) && prev.Cause != CauseUnspecified {
			if prev.Responder == "" && ev.Responder != "" {
				prev.Responder = ev.Responder
				c.pending[ev.Proc] = prev
			}
			return Failure{}, false
		}
		if len(c.pending) >= maxPending {
			for k, p := range c.pending {
				if !fresh(p, ev.Time) {
					delete(c.pending, k)
				}
			}
		}
		c.pending[ev.Proc] = ev
	case KindResponderFailure:
		f := Failure{Time: ev.Time, Cause: CauseUnspecified, Proc: ev.Proc}
		if prev, ok := c.pending[ev.Proc]; ok {
			delete(c.pending, ev.Proc)
			if fresh(prev, ev.Time) {
				f.Cause, f.Responder = prev.Cause, prev.Responder
			}
		}
		return f, true
	}
	return Failure{}, false
}

func fresh(prev Event, now time.Time) bool {
	d := now.Sub(prev.Time)
	return d >= -JoinWindow && d <= JoinWindow
}
