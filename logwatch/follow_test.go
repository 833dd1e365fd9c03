package logwatch

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sink records delivered lines; check asserts lines from..to arrived exactly once each and
// nothing else did.
type sink struct{ got []string }

func (s *sink) add(b []byte) { s.got = append(s.got, string(b)) }

func (s *sink) check(t *testing.T, ranges ...[2]int) {
	t.Helper()
	want := map[string]int{}
	for _, r := range ranges {
		for i := r[0]; i <= r[1]; i++ {
			want[fmt.Sprintf("line %06d", i)]++
		}
	}
	seen := map[string]int{}
	for _, g := range s.got {
		seen[g]++
		if seen[g] > 1 {
			t.Errorf("delivered twice: %q", g)
		}
		if want[g] == 0 {
			t.Errorf("unexpected line %q", g)
		}
	}
	for w := range want {
		if seen[w] == 0 {
			t.Errorf("lost: %q", w)
		}
	}
}

func appendLines(t *testing.T, f *os.File, from, to int) {
	t.Helper()
	var sb strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&sb, "line %06d\n", i)
	}
	if _, err := f.WriteString(sb.String()); err != nil {
		t.Fatal(err)
	}
}

func openAppend(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFollowPartialLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	w := openAppend(t, p)
	fl := &Follower{Path: p}
	defer fl.Close()
	var s sink
	w.WriteString("line 000001\nline 000002\nline 0000")
	fl.Poll(s.add)
	if len(s.got) != 2 {
		t.Fatalf("got %v before the line was complete", s.got)
	}
	w.WriteString("03\n")
	fl.Poll(s.add)
	s.check(t, [2]int{1, 3})
}

// cpanellogd renames error_log to error_log.bkup; Apache keeps writing to the old inode until
// its graceful restart opens a new error_log, and old children a little longer.
func TestFollowRenameRotation(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "error_log")
	old := openAppend(t, p)
	clock := time.Now()
	fl := &Follower{Path: p, Now: func() time.Time { return clock }}
	defer fl.Close()
	var s sink
	appendLines(t, old, 1, 50)
	fl.Poll(s.add)
	appendLines(t, old, 51, 60) // written just before the rename, not yet polled
	if err := os.Rename(p, p+".bkup"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, old, 61, 65) // Apache still writes to the renamed file
	fl.Poll(s.add)              // path missing: keep reading the old file
	appendLines(t, old, 66, 70)
	cur := openAppend(t, p) // the graceful restart creates a new error_log
	appendLines(t, cur, 71, 100)
	fl.Poll(s.add)
	// The old file is drained before the new one is read: lines keep their order.
	if at := strings.Join(s.got, ","); !strings.Contains(at, "line 000070,line 000071") {
		t.Fatalf("old file's lines not delivered before the new file's: %v", s.got[len(s.got)-32:])
	}
	appendLines(t, old, 101, 105) // an old child finishing its request
	appendLines(t, cur, 106, 110)
	fl.Poll(s.add)
	s.check(t, [2]int{1, 110})
	if fl.Rotations.Load() != 1 {
		t.Fatalf("rotations = %d", fl.Rotations.Load())
	}
	// Many polls (inotify wake-ups) within the grace do not close the old file...
	for i := 0; i < 1000; i++ {
		fl.Poll(s.add)
	}
	appendLines(t, old, 111, 111)
	clock = clock.Add(RetireGrace - time.Second)
	fl.Poll(s.add)
	s.check(t, [2]int{1, 111})
	// ... the grace's end does.
	clock = clock.Add(2 * time.Second)
	fl.Poll(s.add)
	if len(fl.retired) != 0 {
		t.Fatal("rotated-away file never closed")
	}
}

func TestFollowCopyTruncate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	w := openAppend(t, p)
	fl := &Follower{Path: p}
	defer fl.Close()
	var s sink
	appendLines(t, w, 1, 50)
	fl.Poll(s.add)
	data, _ := os.ReadFile(p)
	os.WriteFile(p+".bkup", data, 0o644)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	appendLines(t, w, 51, 60) // shorter than the old offset
	fl.Poll(s.add)
	s.check(t, [2]int{1, 60})
	if fl.Truncations.Load() != 1 {
		t.Fatalf("truncations = %d", fl.Truncations.Load())
	}
}

// Truncated and regrown past the old offset between two polls: the size looks like growth.
func TestFollowTruncateThenRegrow(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	w := openAppend(t, p)
	fl := &Follower{Path: p}
	defer fl.Close()
	var s sink
	appendLines(t, w, 1, 20)
	fl.Poll(s.add)
	os.Truncate(p, 0)
	appendLines(t, w, 21, 200)
	fl.Poll(s.add)
	s.check(t, [2]int{1, 200})
	if fl.Truncations.Load() != 1 {
		t.Fatalf("truncations = %d", fl.Truncations.Load())
	}
}

func TestFollowDeletedAndRecreatedLater(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	w := openAppend(t, p)
	var errs []error
	fl := &Follower{Path: p, OnError: func(err error) { errs = append(errs, err) }}
	defer fl.Close()
	var s sink
	appendLines(t, w, 1, 10)
	fl.Poll(s.add)
	w.Close()
	os.Remove(p)
	fl.Poll(s.add)
	fl.Poll(s.add)
	w2 := openAppend(t, p)
	appendLines(t, w2, 11, 20)
	fl.Poll(s.add)
	s.check(t, [2]int{1, 20})
}

func TestFollowMissingAndUnreadableRetried(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	var errs []error
	fl := &Follower{Path: p, OnError: func(err error) { errs = append(errs, err) }}
	defer fl.Close()
	var s sink
	fl.Poll(s.add) // missing
	os.Mkdir(p, 0o755)
	fl.Poll(s.add) // not a regular file (an unreadable error_log as root can't be simulated)
	if len(errs) != 2 {
		t.Fatalf("errors reported: %v", errs)
	}
	os.Remove(p)
	w := openAppend(t, p)
	appendLines(t, w, 1, 5)
	fl.Poll(s.add)
	s.check(t, [2]int{1, 5})
}

// EA4 reaches the log through /etc/apache2/logs -> ../../var/log/apache2.
func TestFollowThroughSymlinkedDirectory(t *testing.T) {
	root := t.TempDir()
	real := filepath.Join(root, "var/log/apache2")
	os.MkdirAll(real, 0o755)
	os.MkdirAll(filepath.Join(root, "etc/apache2"), 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	w := openAppend(t, filepath.Join(real, "error_log"))
	fl := &Follower{Path: filepath.Join(root, "etc/apache2/logs/error_log")}
	defer fl.Close()
	var s sink
	appendLines(t, w, 1, 10)
	fl.Poll(s.add)
	os.Rename(filepath.Join(real, "error_log"), filepath.Join(real, "error_log.bkup"))
	appendLines(t, w, 11, 15)
	w2 := openAppend(t, filepath.Join(real, "error_log"))
	appendLines(t, w2, 16, 30)
	fl.Poll(s.add)
	s.check(t, [2]int{1, 30})
}

func TestFollowStartAtEndAndLongLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	w := openAppend(t, p)
	appendLines(t, w, 1, 10)
	fl := &Follower{Path: p}
	defer fl.Close()
	off, err := fl.Start(-1)
	if err != nil || off == 0 {
		t.Fatalf("Start = %d, %v", off, err)
	}
	var s sink
	appendLines(t, w, 11, 12)
	w.WriteString(strings.Repeat("x", 3*readBuf) + "\n") // spans several reads
	w.WriteString(strings.Repeat("y", MaxLineLen+1) + "\n")
	appendLines(t, w, 13, 14)
	fl.Poll(s.add)
	s.check(t, [2]int{11, 14})
	if fl.Skipped.Load() != 2 || fl.Lines.Load() != 6 {
		t.Fatalf("skipped %d lines %d", fl.Skipped.Load(), fl.Lines.Load())
	}
}
