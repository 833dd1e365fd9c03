package agent

import "time"

// Policy decides when responder failures are an outage worth acting on: Threshold AH01941
// failures within Window. The audit replays it over history; the daemon applies it live.
type Policy struct {
	Threshold int
	Window    time.Duration
}

// windowCounter counts events in the sliding window (t-Window, t]. It keeps only the times
// inside the window (as Unix nanoseconds), so memory is bounded by the failure rate, not by
// how long the outage lasts.
type windowCounter struct {
	window time.Duration
	times  []int64
	max    int
	// reached is when the count first reached the threshold (zero if never).
	reached   time.Time
	threshold int
}

func newWindowCounter(p Policy) *windowCounter {
	return &windowCounter{window: p.Window, threshold: p.Threshold}
}

// Add records a failure at t and returns how many fall within the window ending at t.
// Times slightly out of order (an older line after a newer one) are tolerated.
func (w *windowCounter) Add(t time.Time) int {
	ns := t.UnixNano()
	// Keep times sorted; out-of-order arrivals are rare and near the end.
	i := len(w.times)
	for i > 0 && w.times[i-1] > ns {
		i--
	}
	w.times = append(w.times, 0)
	copy(w.times[i+1:], w.times[i:])
	w.times[i] = ns
	latest := w.times[len(w.times)-1]
	cut := 0
	for cut < len(w.times) && w.times[cut] <= latest-int64(w.window) {
		cut++
	}
	if cut > 0 {
		w.times = append(w.times[:0], w.times[cut:]...)
	}
	n := len(w.times)
	if n > w.max {
		w.max = n
	}
	if n >= w.threshold && w.reached.IsZero() {
		w.reached = t
	}
	return n
}

// Count is the number of failures in the window ending at now.
func (w *windowCounter) Count(now time.Time) int {
	cut := now.UnixNano() - int64(w.window)
	n := 0
	for _, ts := range w.times {
		if ts > cut {
			n++
		}
	}
	return n
}
