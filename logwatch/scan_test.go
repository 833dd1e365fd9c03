//go:build unix

// Unix only: the hostile-path cases use FIFOs and /dev/zero; the agent runs on cPanel's Linux.

package logwatch

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func stamp(t time.Time) string { return t.Format("Mon Jan 02 15:04:05.000000 2006") }

func failureLine(t time.Time, pid int) string {
	return fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", stamp(t), pid)
}

func noiseLine(t time.Time, pid int) string {
	return fmt.Sprintf("[%s] [proxy_fcgi:error] [pid %d] [client 198.51.100.7:52114] AH01071: Got error 'PHP message: PHP Warning:  Undefined variable $x in /home/u/public_html/index.php on line 12'\n", stamp(t), pid)
}

// buildLog writes one line a second from start for n seconds; every 600th second is a
// responder failure. It returns the failure times.
func buildLog(t *testing.T, path string, start time.Time, n int) []time.Time {
	t.Helper()
	var sb strings.Builder
	var fails []time.Time
	for i := 0; i < n; i++ {
		ts := start.Add(time.Duration(i) * time.Second)
		if i%600 == 0 {
			sb.WriteString(failureLine(ts, i))
			fails = append(fails, ts)
		} else {
			sb.WriteString(noiseLine(ts, i))
		}
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return fails
}

func collect(t *testing.T, path string, since, until time.Time) ([]time.Time, ScanStats) {
	t.Helper()
	var got []time.Time
	st, err := ScanHistory(path, since, until, func(ev Event) {
		if ev.Kind == KindResponderFailure {
			got = append(got, ev.Time)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, st
}

func TestScanHistoryWindowSeeks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	fails := buildLog(t, p, t0, 48*3600) // two days, ~10 MB
	info, _ := os.Stat(p)
	end := t0.Add(48 * time.Hour)

	all, st := collect(t, p, t0.Add(-time.Hour), end)
	if len(all) != len(fails) || st.Lines != 48*3600 || st.Bytes != info.Size() {
		t.Fatalf("full scan: %d failures (want %d), %+v", len(all), len(fails), st)
	}

	since := end.Add(-time.Hour)
	got, st := collect(t, p, since, end)
	var want []time.Time
	for _, f := range fails {
		if !f.Before(since) {
			want = append(want, f)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("1h window: got %v, want %v", got, want)
	}
	// The binary search must skip almost all of the file: an hour is 1/48 of it.
	if st.Bytes > info.Size()/10 {
		t.Fatalf("1h window read %d of %d bytes: no seek", st.Bytes, info.Size())
	}
}

func TestScanHistoryRotatedPredecessors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "error_log")
	os.Mkdir(filepath.Join(dir, "archive"), 0o755)
	// October's archive, then November's archive which also holds what is still in
	// error_log.bkup (cpanellogd gzips the .bkup; both may exist for a while), then .bkup,
	// then the current file.
	oct := failureLine(t0.Add(-30*24*time.Hour), 1)
	bkup := failureLine(t0.Add(-2*time.Hour), 3) + failureLine(t0.Add(-90*time.Minute), 4)
	nov := failureLine(t0.Add(-5*time.Hour), 2) + bkup
	cur := failureLine(t0.Add(-30*time.Minute), 5)
	writeGz(t, filepath.Join(dir, "archive", "error_log-10-2026.gz"), oct)
	writeGz(t, filepath.Join(dir, "archive", "error_log-11-2026.gz"), nov)
	writeGz(t, filepath.Join(dir, "archive", "unrelated-11-2026.gz"), failureLine(t0.Add(-time.Hour), 9))
	os.WriteFile(p+".bkup", []byte(bkup), 0o644)
	os.WriteFile(p, []byte(cur), 0o644)

	got, st := collect(t, p, t0.Add(-4*time.Hour), t0)
	if len(got) != 3 {
		t.Fatalf("got %d failures %v, want 3 (the .bkup lines also in the archive count once)", len(got), got)
	}
	want := []string{filepath.Join(dir, "archive", "error_log-11-2026.gz"), p + ".bkup", p}
	if fmt.Sprint(st.Files) != fmt.Sprint(want) {
		t.Fatalf("files %v, want %v (October not needed)", st.Files, want)
	}
	// Six hours reach past November's first line, into October.
	if _, st = collect(t, p, t0.Add(-6*time.Hour), t0); len(st.Files) != 4 {
		t.Fatalf("6h window read %v", st.Files)
	}

	// A window inside the current file reads only the current file.
	_, st = collect(t, p, t0.Add(-29*time.Minute), t0)
	if len(st.Files) != 1 {
		t.Fatalf("read %v", st.Files)
	}
}

func writeGz(t *testing.T, p, content string) {
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.Write([]byte(content))
	zw.Close()
	f.Close()
}

func TestScanHistoryOddInput(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	long := "[" + stamp(t0) + "] [ssl:error] [pid 1] AH01941: " + strings.Repeat("y", 2*MaxLineLen) + "\n"
	huge := strings.Repeat("z", 3*bufSize) + "\n" // longer than the scan buffer
	content := failureLine(t0, 1) +
		"junk without a timestamp \x00\xff\xfe invalid utf-8\n" +
		long + huge +
		failureLine(t0.Add(2*time.Second), 2) +
		failureLine(t0.Add(time.Second), 3) + // a little out of order
		strings.TrimSuffix(failureLine(t0.Add(3*time.Second), 4), "\n") // no final newline
	os.WriteFile(p, []byte(content), 0o644)
	got, st := collect(t, p, t0, t0.Add(time.Minute))
	if len(got) != 4 {
		t.Fatalf("got %d failures, want 4", len(got))
	}
	if st.Lines != 7 || st.Skipped != 2 {
		t.Fatalf("lines %d skipped %d, want 7 and 2", st.Lines, st.Skipped)
	}
}

func TestScanHistoryMissingLog(t *testing.T) {
	_, err := ScanHistory(filepath.Join(t.TempDir(), "error_log"), t0, t0, func(Event) {})
	if !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func TestCountLong(t *testing.T) {
	for _, c := range []struct {
		lines []int
		want  int64
	}{
		{[]int{10, 20}, 0},
		{[]int{MaxLineLen, 5}, 0},
		{[]int{MaxLineLen + 1}, 1},
		{[]int{5, 3 * MaxLineLen, 7, MaxLineLen + 2, 1}, 2},
		{[]int{MaxLineLen/2 - 1, MaxLineLen/2 + 10}, 0},
	} {
		var sb strings.Builder
		for _, n := range c.lines {
			sb.WriteString(strings.Repeat("a", n) + "\n")
		}
		if got := countLong([]byte(sb.String())); got != c.want {
			t.Errorf("lines %v: countLong = %d, want %d", c.lines, got, c.want)
		}
	}
}

// hangBound is how long a scan or poll of a hostile path may take before the test calls it
// hung. Each returns in milliseconds; the bound turns a regression (a blocking open of a
// FIFO, an endless read of /dev/zero) into a failure instead of a suite that never ends.
const hangBound = 5 * time.Second

// within runs f on another goroutine and fails the test if it has not returned within
// hangBound. f only records results; the caller checks them on the test's goroutine.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangBound):
		t.Fatalf("%s still blocked after %v", what, hangBound)
	}
}

func mkfifo(t *testing.T, p string) {
	t.Helper()
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScanHistoryContextRefusesNonRegular(t *testing.T) {
	// The later cases need predecessors: the current log starts after the window does.
	recent := failureLine(t0.Add(-10*time.Minute), 1)
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, p string) string // returns the path the error must name
		kind  string
	}{
		{"error_log is a FIFO", func(t *testing.T, p string) string { mkfifo(t, p); return p }, "named pipe (FIFO)"},
		{"error_log links to /dev/zero", func(t *testing.T, p string) string {
			if err := os.Symlink("/dev/zero", p); err != nil {
				t.Fatal(err)
			}
			return p
		}, "character device"},
		{"error_log is a directory", func(t *testing.T, p string) string { os.Mkdir(p, 0o755); return p }, "directory"},
		{"error_log.bkup is a FIFO", func(t *testing.T, p string) string {
			os.WriteFile(p, []byte(recent), 0o644)
			mkfifo(t, p+".bkup")
			return p + ".bkup"
		}, "named pipe (FIFO)"},
		{"an archive is a FIFO", func(t *testing.T, p string) string {
			os.WriteFile(p, []byte(recent), 0o644)
			os.WriteFile(p+".bkup", []byte(failureLine(t0.Add(-20*time.Minute), 2)), 0o644)
			a := filepath.Join(filepath.Dir(p), "archive", "error_log-11-2026.gz")
			os.Mkdir(filepath.Dir(a), 0o755)
			mkfifo(t, a)
			return a
		}, "named pipe (FIFO)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "error_log")
			bad := c.setup(t, p)
			var err error
			within(t, "ScanHistoryContext", func() {
				_, err = ScanHistoryContext(context.Background(), p, t0.Add(-time.Hour), t0, func(Event) {})
			})
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), bad+" is a "+c.kind) {
				t.Fatalf("err = %v, want ErrNotRegular naming %s as a %s", err, bad, c.kind)
			}
		})
	}
}

// A cancelled scan stops within one buffer: it reads at most bufSize of a log several times
// that size, and says why with context.Canceled.
func TestScanHistoryContextCancel(t *testing.T) {
	const hours = 12 // one line a second, ~2.6 MB
	for _, c := range []struct {
		name         string
		gz           bool // the log to scan is a gzip archive, reached as a predecessor
		cancelBefore bool // cancel before the scan; otherwise at the first event
	}{
		{"before the scan", false, true},
		{"at the first event", false, false},
		{"at the first event of a gzip archive", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "error_log")
			start := t0.Add(-hours * time.Hour)
			if c.gz {
				tmp := filepath.Join(dir, "gen")
				buildLog(t, tmp, start, hours*3600)
				data, err := os.ReadFile(tmp)
				if err != nil {
					t.Fatal(err)
				}
				os.Remove(tmp)
				os.Mkdir(filepath.Join(dir, "archive"), 0o755)
				writeGz(t, filepath.Join(dir, "archive", "error_log-11-2026.gz"), string(data))
				os.WriteFile(p, []byte(failureLine(t0, 1)), 0o644)
			} else {
				buildLog(t, p, start, hours*3600)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancelBefore {
				cancel()
			}
			var events int
			var st ScanStats
			var err error
			within(t, "ScanHistoryContext", func() {
				st, err = ScanHistoryContext(ctx, p, start.Add(-time.Minute), t0.Add(time.Minute), func(Event) {
					events++
					cancel()
				})
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if st.Bytes > bufSize || events > bufSize/len(noiseLine(t0, 1))/600+1 {
				t.Fatalf("read %d bytes and delivered %d events after cancelling", st.Bytes, events)
			}
			if c.cancelBefore && (st.Bytes != 0 || events != 0) {
				t.Fatalf("cancelled before the scan, still read %d bytes, %d events", st.Bytes, events)
			}
		})
	}
}

// The gzip inflater can consume any amount of input without returning (here, a run of empty
// deflate blocks between two lines; crafted, it is endless in effect). Only the reads of the
// file under it can stop it, so cancelling must stop it there.
func TestGzipEndlessInputStopsOnCancel(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log-11-2026.gz")
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write([]byte("first line\n"))
	for range 100_000 { // 5 bytes each: ~500 KB of input, several times the gzInput buffer
		zw.Flush()
	}
	zw.Write([]byte("second line\n"))
	zw.Close()
	if err := os.WriteFile(p, zbuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := open(ctx, histFile{path: p, gz: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte("\n")) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading the first line: %v", err)
		}
	}
	cancel()
	var rest []byte
	within(t, "reading the empty blocks", func() { rest, err = io.ReadAll(r) })
	if !errors.Is(err, context.Canceled) || bytes.Contains(rest, []byte("second")) {
		t.Fatalf("after cancel: read %q, err %v; want context.Canceled before the second line", rest, err)
	}
}

// The daemon's Follower opens its path through openRegular too (this test lives here, with
// openRegular): a FIFO or a device at the path is an error reported through OnError at once,
// never a blocked loop, and the path is retried on the next Poll.
func TestFollowRefusesNonRegular(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, p string)
		kind  string
	}{
		{"FIFO", func(t *testing.T, p string) { mkfifo(t, p) }, "named pipe (FIFO)"},
		{"symlink to /dev/zero", func(t *testing.T, p string) {
			if err := os.Symlink("/dev/zero", p); err != nil {
				t.Fatal(err)
			}
		}, "character device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "error_log")
			c.setup(t, p)
			var errs []error
			fl := &Follower{Path: p, OnError: func(err error) { errs = append(errs, err) }}
			defer fl.Close()
			var s sink
			var startErr error
			within(t, "Follower.Start and Poll", func() {
				_, startErr = fl.Start(-1)
				fl.Poll(s.add)
			})
			if !errors.Is(startErr, ErrNotRegular) {
				t.Fatalf("Start: err = %v, want ErrNotRegular", startErr)
			}
			if len(errs) != 1 || !errors.Is(errs[0], ErrNotRegular) || !strings.Contains(errs[0].Error(), p+" is a "+c.kind) {
				t.Fatalf("OnError got %v, want one ErrNotRegular naming %s as a %s", errs, p, c.kind)
			}
			if fl.Opens.Load() != 0 || len(s.got) != 0 {
				t.Fatalf("opens %d, lines %q", fl.Opens.Load(), s.got)
			}

			os.Remove(p)
			w := openAppend(t, p)
			appendLines(t, w, 1, 3)
			fl.Poll(s.add)
			s.check(t, [2]int{1, 3})
		})
	}
}

// A block of raw lines with forged dates (a tenant's CGI writing to Apache's stderr) appended
// after real failures must not steer the window search past them: the probes see the disorder
// and the file is read whole. An ordered log still seeks (TestScanHistoryWindowSeeks).
func TestScanHistoryForgedDatesCannotSteerTheSearch(t *testing.T) {
	end := t0.Add(48 * time.Hour)
	for name, forgedAt := range map[string]time.Time{
		"years back":  t0.Add(-3 * 365 * 24 * time.Hour),
		"hours ahead": end.Add(3 * time.Hour),
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "error_log")
			buildLog(t, p, t0, 48*3600-300)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			real := []time.Time{end.Add(-4 * time.Minute), end.Add(-3 * time.Minute)}
			for i, ts := range real {
				fmt.Fprint(f, failureLine(ts, 90000+i))
			}
			for i := 0; i < 20000; i++ {
				fmt.Fprint(f, failureLine(forgedAt.Add(time.Duration(i)*time.Second), 80000+i))
			}
			f.Close()
			got, st := collect(t, p, end.Add(-time.Hour), end)
			if fmt.Sprint(got[len(got)-2:]) != fmt.Sprint(real) || st.Disordered != 1 {
				t.Fatalf("got %d failures ending %v, disordered %d", len(got), got[max(0, len(got)-2):], st.Disordered)
			}
		})
	}
}
