package logwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type scanResult struct {
	events              string
	lines, skipped, byt int64
	flushes             int
}

func scanFileWith(t *testing.T, path string, off int64, skipPartial, mapped bool) scanResult {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var got []string
	var st ScanStats
	var r scanResult
	fn := func(ev Event) { got = append(got, describe(ev)) }
	flush := func() error { r.flushes++; return nil }
	if mapped {
		err = scanMapped(context.Background(), fh, off, nil, skipPartial, &st, fn, flush)
	} else {
		err = scanStream(context.Background(), fh, nil, skipPartial, &st, fn, flush)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.events, r.lines, r.skipped, r.byt = strings.Join(got, "\n"), st.Lines, st.Skipped, st.Bytes
	return r
}

// Reading through mappings gives exactly what read() gives: events, lines, over-long and
// over-buffer lines, bytes, from any offset with or without a partial first line, across
// the mapping's windows, and at the file's end with or without a final newline (also a last
// line of exactly a buffer).
func TestScanMappedAgreesWithScanStream(t *testing.T) {
	ts := stamp(t0)
	fail := "[" + ts + "] [ssl:error] [pid 7] AH01941: stapling_renew_response: responder error"
	noise := "[" + ts + "] [php:error] [pid 10] [client 198.51.100.7:1] AH01071: Got error 'PHP message: [ssl: ['"
	var b strings.Builder
	for i := 0; b.Len() < 2*mapWindow+bufSize; i++ {
		b.WriteString(noise)
		b.WriteByte('\n')
		if i%97 == 0 {
			b.WriteString(fail + "\n")
		}
		switch i % 40_000 {
		case 5_000: // longer than a buffer, needles inside
			b.WriteString(strings.Repeat("[ssl:", bufSize/5+3) + "\n")
		case 15_000: // exactly a buffer without its newline, then one byte short
			b.WriteString(strings.Repeat("x", bufSize) + "\n" + fail + strings.Repeat("y", bufSize-1-len(fail)) + "\n")
		case 25_000:
			b.WriteString(strings.Repeat("z", MaxLineLen+1) + "\n")
		}
	}
	big := b.String()
	dir := t.TempDir()
	files := map[string]string{
		"windows":                  big,
		"no final newline":         big + fail,
		"last line a whole buffer": big + strings.Repeat("w", bufSize),
		"last line over a buffer":  big + strings.Repeat("v", bufSize+10),
		"empty":                    "",
		"one line, no newline":     fail,
		"only a partial line":      strings.Repeat("q", 100),
	}
	for name, content := range files {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		offsets := []int64{0}
		if n := int64(len(content)); n > 0 {
			offsets = append(offsets, 1, n/3, mapWindow-1, mapWindow+bufSize/2, n-1, n)
		}
		for _, off := range offsets {
			if off > int64(len(content)) {
				continue
			}
			for _, skip := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/off %d/skip %v", name, off, skip), func(t *testing.T) {
					want := scanFileWith(t, path, off, skip, false)
					got := scanFileWith(t, path, off, skip, true)
					if got.events != want.events || got.lines != want.lines || got.skipped != want.skipped || got.byt != want.byt {
						t.Fatalf("mapped: %d events, %d lines, %d skipped, %d bytes; read(): %d, %d, %d, %d",
							strings.Count(got.events, "\n"), got.lines, got.skipped, got.byt,
							strings.Count(want.events, "\n"), want.lines, want.skipped, want.byt)
					}
					if got.flushes == 0 {
						t.Fatal("never flushed")
					}
				})
			}
		}
	}
	// The reference for the whole file: every line classified.
	wantEv, wantLines, _ := refScan([]byte(big), nil)
	got := scanFileWith(t, filepath.Join(dir, "windows"), 0, false, true)
	if got.events != strings.Join(wantEv, "\n") || got.lines != wantLines {
		t.Fatalf("mapped: %d lines, want %d; events equal: %v", got.lines, wantLines, got.events == strings.Join(wantEv, "\n"))
	}
}

// A log truncated while it is being read through a mapping (copytruncate rotation, an admin
// emptying it) would kill the process with SIGBUS on the lost pages; the scan returns
// errShrank instead, and the process goes on.
func TestScanMappedTruncatedWhileReading(t *testing.T) {
	ts := stamp(t0)
	fail := "[" + ts + "] [ssl:error] [pid 7] AH01941: stapling_renew_response: responder error\n"
	path := filepath.Join(t.TempDir(), "error_log")
	content := bytes.Repeat([]byte(fail), (3*mapWindow)/len(fail))
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var st ScanStats
	events := 0
	err = scanMapped(context.Background(), fh, 0, nil, false, &st, func(Event) {
		events++
		if events == 1 {
			if err := os.Truncate(path, 4096); err != nil {
				t.Error(err)
			}
		}
	}, nil)
	if !errors.Is(err, errShrank) {
		t.Fatalf("got %v after %d events, want errShrank", err, events)
	}
	// A panic that is not a fault in the mapping is not swallowed.
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want the callback's own panic", r)
		}
	}()
	_ = scanMapped(context.Background(), fh, 0, nil, false, &st, func(Event) { panic("boom") }, nil)
}
