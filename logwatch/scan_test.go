package logwatch

import (
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
