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
// how long the outage lasts; a dead responder on a busy host logs a failure per handshake, so
// Add is amortised O(1): expired times are skipped by moving a head index, and the slice is
// compacted only when the head passes its middle.
type windowCounter struct {
	window time.Duration
	times  []int64 // sorted; times[head:] are inside the window
	head   int
	max    int
	// reached is when the count first reached the threshold (zero if never).
	reached   time.Time
	threshold int
}

func newWindowCounter(p Policy) *windowCounter {
	return &windowCounter{window: p.Window, threshold: p.Threshold}
}

// Add records a failure at t and returns how many fall within the window ending at the latest
// time seen. Times slightly out of order (an older line after a newer one) are tolerated.
func (w *windowCounter) Add(t time.Time) int {
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
	for w.head < len(w.times) && w.times[w.head] <= latest-int64(w.window) {
		w.head++
	}
	if w.head > len(w.times)/2 {
		w.times = append(w.times[:0], w.times[w.head:]...)
		w.head = 0
	}
	n := len(w.times) - w.head
	if n > w.max {
		w.max = n
	}
	if n >= w.threshold && w.reached.IsZero() {
		w.reached = t
	}
	return n
}
