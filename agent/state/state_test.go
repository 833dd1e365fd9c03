package state

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/policy"
)

func newState(t *testing.T) *State {
	s := New(filepath.Join(t.TempDir(), "state"), time.Now)
	if err := s.Ensure(); err != nil {
		t.Fatal(err)
	}
	return s
}

// A second holder waits for the lock, then gives up with a message that names the lock file.
func TestLockTimeout(t *testing.T) {
	s := newState(t)
	unlock, err := s.Lock(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, err = s.Lock(context.Background(), 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "another stapling-agent has held") || !strings.Contains(err.Error(), filepath.Join(s.Dir, "lock")) {
		t.Fatalf("err = %v", err)
	}
}

// A cancelled context (SIGTERM) stops the wait at once.
func TestLockCancelled(t *testing.T) {
	s := newState(t)
	unlock, err := s.Lock(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Lock(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	unlock()
	again, err := s.Lock(context.Background(), time.Second)
	if err != nil {
		t.Fatalf("lock not free after unlock: %v", err)
	}
	again()
}

// The journal's reading of "our remediations" is the policy's memory, for the daemon's start and
// the audit's replay alike.
func TestMemoryFromJournal(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	const inc = "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"
	entries := []Entry{
		{Time: now.Add(-30 * time.Hour), Action: Remediate, Step: Done, File: inc},        // a day ago: cooldown yes, budget no
		{Time: now.Add(-3 * time.Hour), Action: Remediate, Step: Intent, File: inc},       // not terminal
		{Time: now.Add(-3 * time.Hour), Action: Remediate, Step: RolledBack, File: inc},   // attempted: counts
		{Time: now.Add(-2 * time.Hour), Action: Remediate, Step: Noop, File: inc},         // nothing done
		{Time: now.Add(-90 * time.Minute), Action: Remediate, Step: Refused, File: inc},   // nothing changed
		{Time: now.Add(-time.Hour), Action: Revert, Step: Done, File: inc},                // a revert
		{Time: now.Add(-40 * time.Minute), Action: Remediate, Step: Done, File: "/other"}, // another file
		{Time: now.Add(-20 * time.Minute), Action: Remediate, Step: Done, File: inc},
		{Time: now.Add(time.Hour), Action: Remediate, Step: Done, File: inc}, // after `at`
	}
	m := Memory(entries, inc, now)
	want := policy.Memory{LastAct: now.Add(-20 * time.Minute), Cutoff: now.Add(-20*time.Minute + policy.EffectGrace),
		Acts: []time.Time{now.Add(-3 * time.Hour), now.Add(-20 * time.Minute)}}
	if !m.LastAct.Equal(want.LastAct) || !m.Cutoff.Equal(want.Cutoff) || len(m.Acts) != 2 || !m.Acts[0].Equal(want.Acts[0]) || !m.Acts[1].Equal(want.Acts[1]) {
		t.Fatalf("memory %+v, want %+v", m, want)
	}
	if got := LastRemediation(entries, inc); !got.Equal(now.Add(time.Hour)) {
		t.Fatalf("last remediation %s", got)
	}
}

// An interrupted transaction over several files is found by any of its files; entries written
// before Files existed (the include only) are still read.
func TestUnfinishedMultiFile(t *testing.T) {
	s := newState(t)
	inc, ex := "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf", "/etc/apache2/conf.d/userdata/ssl/2_4/u/d/stapling-agent-must-staple.conf"
	s.Append(Entry{Action: Remediate, Step: Done, File: inc, Result: OK}) // an old single-file entry
	if u, err := s.Unfinished(inc); err != nil || u != nil {
		t.Fatalf("%+v %v", u, err)
	}
	s.Append(Entry{Action: Remediate, Step: Intent, File: inc, Files: []string{ex, inc}, Result: OK})
	for _, f := range []string{inc, ex} {
		if u, err := s.Unfinished(f); err != nil || u == nil || len(u.Files) != 2 || u.Files[0] != ex {
			t.Fatalf("%s: %+v %v", f, u, err)
		}
	}
	s.Append(Entry{Action: Remediate, Step: Done, File: inc, Files: []string{ex, inc}, Result: OK})
	if u, _ := s.Unfinished(ex); u != nil {
		t.Fatalf("finished still unfinished: %+v", u)
	}
}
