//go:build unix

package logwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// seqScan is the history scan as it was before scanJobs: one file after the other.
func seqScan(ctx context.Context, jobs []scanJob) ([]string, ScanStats, error) {
	var got []string
	var st ScanStats
	for _, j := range jobs {
		if err := scanFile(ctx, j.file, nil, j.since, j.until, &st, func(ev Event) { got = append(got, describe(ev)) }, nil); err != nil {
			return got, st, err
		}
	}
	return got, st, nil
}

// historyJobs is what ScanHistoryFormat hands scanJobs for path.
func historyJobs(t *testing.T, path string, since, until time.Time) []scanJob {
	files, err := historyFiles(context.Background(), path, nil, since)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []scanJob
	for i := len(files) - 1; i >= 0; i-- {
		end := until
		if i > 0 && !files[i-1].first.IsZero() && files[i-1].first.Before(end) {
			end = files[i-1].first
		}
		jobs = append(jobs, scanJob{files[i], since, end})
	}
	return jobs
}

// Twelve monthly archives (overlapping the next newer file, as cpanellogd leaves them), a
// .bkup and the current log; some archives corrupt or truncated. The concurrent scan makes
// the same calls, in the same order, with the same stats and error as reading the files one
// after the other, whatever GOMAXPROCS.
func TestScanJobsAgreesWithSequential(t *testing.T) {
	base := t0.Add(-400 * 24 * time.Hour)
	for _, c := range []struct {
		name    string
		corrupt map[int]func([]byte) []byte // archive index (oldest 0) -> damage
	}{
		{"intact", nil},
		{"truncated archive", map[int]func([]byte) []byte{5: func(b []byte) []byte { return b[:len(b)*2/3] }}},
		{"corrupt header", map[int]func([]byte) []byte{0: func(b []byte) []byte { return append([]byte("not gzip"), b...) }}},
		{"truncated header", map[int]func([]byte) []byte{3: func(b []byte) []byte { return b[:5] }}},
		{"corrupt deflate data", map[int]func([]byte) []byte{9: func(b []byte) []byte {
			b = append([]byte(nil), b...)
			for i := len(b) / 2; i < len(b)/2+64; i++ {
				b[i] ^= 0x55
			}
			return b
		}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "error_log")
			os.Mkdir(filepath.Join(dir, "archive"), 0o755)
			month := func(m int) string {
				var sb strings.Builder
				start := base.Add(time.Duration(m) * 30 * 24 * time.Hour)
				for i := range 5000 { // 31 days + an overlap with the next month
					ts := start.Add(time.Duration(i) * 536 * time.Second)
					if i%37 == 0 {
						sb.WriteString(failureLine(ts, i))
					} else {
						sb.WriteString(noiseLine(ts, i))
					}
				}
				return sb.String()
			}
			for m := range 12 {
				ap := filepath.Join(dir, "archive", fmt.Sprintf("error_log-%02d-2025.gz", m+1))
				writeGz(t, ap, month(m))
				if damage := c.corrupt[m]; damage != nil {
					b, _ := os.ReadFile(ap)
					os.WriteFile(ap, damage(b), 0o644)
				}
			}
			os.WriteFile(p+".bkup", []byte(month(12)), 0o644)
			os.WriteFile(p, []byte(month(13)), 0o644)

			since, until := base.Add(-time.Hour), t0
			if _, err := historyFiles(context.Background(), p, nil, since); err != nil {
				// A header that does not read fails the scan before any file is read, as before.
				if _, serr := ScanHistory(p, since, until, func(Event) {}); !strings.Contains(c.name, "header") || fmt.Sprint(serr) != fmt.Sprint(err) {
					t.Fatalf("ScanHistory: %v; listing the files: %v", serr, err)
				}
				return
			}
			jobs := historyJobs(t, p, since, until)
			if len(jobs) != 14 {
				t.Fatalf("%d files", len(jobs))
			}
			want, wantSt, wantErr := seqScan(context.Background(), jobs)
			for _, procs := range []int{1, 2, 4, 16} {
				old := runtime.GOMAXPROCS(procs)
				var got []string
				st, err := scanJobs(context.Background(), jobs, nil, func(ev Event) { got = append(got, describe(ev)) })
				runtime.GOMAXPROCS(old)
				if fmt.Sprint(err) != fmt.Sprint(wantErr) || strings.Join(got, "\n") != strings.Join(want, "\n") || fmt.Sprint(st) != fmt.Sprint(wantSt) {
					t.Fatalf("GOMAXPROCS %d: %d events, %+v, err %v; sequential: %d events, %+v, err %v", procs, len(got), st, err, len(want), wantSt, wantErr)
				}
			}
			if (c.corrupt == nil) != (wantErr == nil) || len(want) == 0 {
				t.Fatalf("sequential: %d events, err %v", len(want), wantErr)
			}
		})
	}
}

// Cancelling while several archives are being read stops every reader: scanJobs returns
// context.Canceled, and no goroutine it started is left.
func TestScanJobsCancelLeavesNoGoroutines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "error_log")
	os.Mkdir(filepath.Join(dir, "archive"), 0o755)
	for m := range 8 {
		tmp := filepath.Join(dir, "gen")
		buildLog(t, tmp, t0.Add(-time.Duration(9-m)*30*24*time.Hour), 4*3600)
		b, _ := os.ReadFile(tmp)
		os.Remove(tmp)
		writeGz(t, filepath.Join(dir, "archive", fmt.Sprintf("error_log-%02d-2026.gz", m+1)), string(b))
	}
	os.WriteFile(p, []byte(failureLine(t0, 1)), 0o644)
	before := runtime.NumGoroutine()
	old := runtime.GOMAXPROCS(4)
	defer runtime.GOMAXPROCS(old)
	for _, at := range []int{1, 10, 50} { // cancel at the n-th event
		ctx, cancel := context.WithCancel(context.Background())
		events := 0
		var err error
		within(t, "ScanHistoryContext", func() {
			_, err = ScanHistoryContext(ctx, p, t0.Add(-300*24*time.Hour), t0.Add(time.Minute), func(Event) {
				if events++; events == at {
					cancel()
				}
			})
		})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancel at event %d: err = %v", at, err)
		}
		// The readers have returned (scanJobs waited for them); a goroutine past its wg.Done is
		// still counted until it has exited: give them (on a loaded machine) a few seconds.
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Fatalf("cancel at event %d: %d goroutines left, %d before:\n%s", at, n, before, buf[:runtime.Stack(buf, true)])
		}
	}
}

// The window search reads only the window: bytes scanned are at most the window's own bytes
// (and disorderSlack's) plus one probeLimit where the binary search stops; on a log of a
// month that is well under 1% for an hour (the bench checks the 2 GB case).
func TestScanHistoryWindowBytesRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "error_log")
	buildLog(t, p, t0, 48*3600)
	info, _ := os.Stat(p)
	end := t0.Add(48 * time.Hour)
	since := end.Add(-time.Hour)
	inWindow := int64(0)
	for i := 0; i < 48*3600; i++ {
		ts := t0.Add(time.Duration(i) * time.Second)
		if !ts.Before(since.Add(-disorderSlack)) {
			if i%600 == 0 {
				inWindow += int64(len(failureLine(ts, i)))
			} else {
				inWindow += int64(len(noiseLine(ts, i)))
			}
		}
	}
	_, st := collect(t, p, since, end)
	if st.Bytes < inWindow-int64(len(noiseLine(t0, 1))) || st.Bytes > inWindow+probeLimit {
		t.Fatalf("1h window read %d bytes of %d; the window holds %d", st.Bytes, info.Size(), inWindow)
	}
}
