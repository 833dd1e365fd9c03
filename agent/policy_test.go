package agent

import (
	"testing"
	"time"
)

func TestWindowCounter(t *testing.T) {
	w := newWindowCounter(Policy{Threshold: 3, Window: 10 * time.Minute})
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
	if w.max != 4 || !w.reached.Equal(t0.Add(9*time.Minute)) {
		t.Fatalf("max %d reached %s", w.max, w.reached)
	}
}

// A dead responder on a busy host: a million failures through a 10-minute window, one every
// millisecond, stays linear (this would take minutes if each Add copied the window).
func TestWindowCounterManyFailures(t *testing.T) {
	w := newWindowCounter(Policy{Threshold: 3, Window: 10 * time.Minute})
	t0 := time.Now()
	for i := 0; i < 1_000_000; i++ {
		w.Add(t0.Add(time.Duration(i) * time.Millisecond))
	}
	if n := len(w.times) - w.head; n != 600_000 || w.max != 600_000 {
		t.Fatalf("in window %d, max %d", n, w.max)
	}
	if cap(w.times) > 4*600_000 {
		t.Fatalf("memory not bounded by the window: cap %d", cap(w.times))
	}
}
