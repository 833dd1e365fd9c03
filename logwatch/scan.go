package logwatch

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// bufSize is the fixed scan buffer: resident memory stays flat whatever the log size.
	bufSize = 1 << 20
	// disorderSlack: the binary search aims this far before the window start, and lines are
	// then filtered by their own timestamps, so lines a little out of order (an NTP step, a
	// slow worker) are not lost at the window's edge.
	disorderSlack = time.Minute
	// probeLimit is how far a binary-search probe reads to find a timestamped line; junk
	// (a multi-line PHP dump, a binary blob) longer than this counts as "later than since",
	// which only makes the scan start earlier.
	probeLimit = 256 * 1024
)

// candidate is the prefilter: every stapling event is written by mod_ssl, as "[ssl:level]".
var candidate = []byte("[ssl:")

// ScanStats describes what a history scan read.
type ScanStats struct {
	Files   []string // in reading order, oldest first
	Bytes   int64    // bytes read (after decompression)
	Lines   int64
	Skipped int64 // lines longer than MaxLineLen
}

// ScanHistory calls fn, in log order, for every event from since (inclusive) to until
// (exclusive) in the error log at path and, when the window reaches back past that file's
// first line, its rotated predecessors: cpanellogd renames error_log to error_log.bkup and
// gzips it into archive/error_log-MM-YYYY.gz (FACTS.md section 5). A missing predecessor is
// fine; a missing or unreadable current log is an error.
func ScanHistory(path string, since, until time.Time, fn func(Event)) (ScanStats, error) {
	var st ScanStats
	files, err := historyFiles(path, since)
	if err != nil {
		return st, err
	}
	// Scan oldest first. Each file covers [its first timestamp, the next newer file's first
	// timestamp): an archive that already holds error_log.bkup's lines does not count twice.
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		end := until
		if i > 0 && !files[i-1].first.IsZero() && files[i-1].first.Before(end) {
			end = files[i-1].first
		}
		if err := scanFile(f, since, end, &st, fn); err != nil {
			return st, err
		}
	}
	return st, nil
}

type histFile struct {
	path  string
	gz    bool
	first time.Time // zero when the file has no timestamped line in its head
}

// historyFiles lists the current log and as many predecessors as the window needs, newest first.
func historyFiles(path string, since time.Time) ([]histFile, error) {
	cur := histFile{path: path}
	first, err := firstTime(cur)
	if err != nil {
		return nil, err
	}
	cur.first = first
	files := []histFile{cur}
	if !first.IsZero() && !first.After(since) {
		return files, nil
	}
	for _, p := range predecessors(path) {
		f := histFile{path: p.path, gz: p.gz}
		t, err := firstTime(f)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		f.first = t
		files = append(files, f)
		if !t.IsZero() && !t.After(since) {
			break
		}
	}
	return files, nil
}

// predecessors are error_log.bkup, then archive/error_log-MM-YYYY.gz newest month first.
func predecessors(path string) []histFile {
	out := []histFile{{path: path + ".bkup"}}
	base := filepath.Base(path)
	archive := filepath.Join(filepath.Dir(path), "archive")
	entries, _ := os.ReadDir(archive)
	type arch struct {
		path        string
		year, month int
	}
	var as []arch
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, base+"-")
		if !ok || !strings.HasSuffix(rest, ".gz") {
			continue
		}
		mm, yyyy, ok := strings.Cut(strings.TrimSuffix(rest, ".gz"), "-")
		m, err1 := strconv.Atoi(mm)
		y, err2 := strconv.Atoi(yyyy)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		as = append(as, arch{filepath.Join(archive, name), y, m})
	}
	sort.Slice(as, func(i, j int) bool {
		if as[i].year != as[j].year {
			return as[i].year > as[j].year
		}
		return as[i].month > as[j].month
	})
	for _, a := range as {
		out = append(out, histFile{path: a.path, gz: true})
	}
	return out
}

func open(f histFile) (io.ReadCloser, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, err
	}
	if !f.gz {
		return fh, nil
	}
	zr, err := gzip.NewReader(fh)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("read %s: %w", f.path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, fh}, nil
}

// firstTime is the timestamp of the first timestamped line in the file's head.
func firstTime(f histFile) (time.Time, error) {
	r, err := open(f)
	if err != nil {
		return time.Time{}, err
	}
	defer r.Close()
	t, _ := firstTimeIn(io.LimitReader(r, probeLimit))
	return t, nil
}

// firstTimeIn returns the first parseable timestamp in r and how many bytes precede its line.
func firstTimeIn(r io.Reader) (time.Time, bool) {
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, err := br.ReadSlice('\n')
		if ts, _, ok := cutTimestamp(line); ok {
			if t, ok := parseTime(ts); ok {
				return t, true
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return time.Time{}, false
		}
	}
}

func scanFile(f histFile, since, until time.Time, st *ScanStats, fn func(Event)) error {
	r, err := open(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.path, err)
	}
	defer r.Close()
	st.Files = append(st.Files, f.path)
	skipPartial := false
	if fh, ok := r.(*os.File); ok && !f.first.IsZero() && f.first.Before(since.Add(-disorderSlack)) {
		off, err := seekTime(fh, since.Add(-disorderSlack))
		if err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		if _, err := fh.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		skipPartial = off > 0
	}
	return scanStream(r, skipPartial, st, func(ev Event) {
		if !ev.Time.Before(since) && ev.Time.Before(until) {
			fn(ev)
		}
	})
}

// seekTime finds, by binary search on line timestamps, an offset at or before the first line
// stamped at or after t. The offset may fall inside a line; the caller skips to the next one.
func seekTime(f *os.File, t time.Time) (int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	lo, hi := int64(0), info.Size()
	for hi-lo > probeLimit {
		mid := lo + (hi-lo)/2
		if _, err := f.Seek(mid, io.SeekStart); err != nil {
			return 0, err
		}
		br := bufio.NewReaderSize(io.LimitReader(f, probeLimit), 64*1024)
		// Skip the partial line at mid.
		if _, err := br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			hi = mid
			continue
		}
		pt, ok := firstTimeIn(br)
		if ok && pt.Before(t) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// scanStream reads r with one fixed buffer. For each run of complete lines it counts lines,
// counts over-long lines, and finds candidates with the "[ssl:" prefilter (bytes.Index runs
// in SIMD); only candidate lines are parsed. A line longer than the buffer is skipped whole.
func scanStream(r io.Reader, skipPartial bool, st *ScanStats, fn func(Event)) error {
	buf := make([]byte, bufSize)
	n := 0           // bytes in buf
	discard := false // inside a line longer than the buffer
	for {
		m, err := r.Read(buf[n:])
		st.Bytes += int64(m)
		n += m
		data := buf[:n]
		if skipPartial || discard {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				n = 0
				if err == nil {
					continue
				}
				data = nil
			} else {
				if discard {
					st.Lines++
					st.Skipped++
				}
				skipPartial, discard = false, false
				data = data[i+1:]
			}
		}
		end := bytes.LastIndexByte(data, '\n') + 1
		if err != nil && err != io.EOF {
			return err
		}
		if err == io.EOF && end < len(data) {
			end = len(data) // a last line without newline still counts
			if len(data) > 0 {
				st.Lines++
			}
		}
		scanLines(data[:end], st, fn)
		rest := copy(buf, data[end:])
		n = rest
		if err == io.EOF {
			return nil
		}
		if n == len(buf) { // no newline in a full buffer
			n, discard = 0, true
		}
	}
}

// scanLines handles a run of complete lines.
func scanLines(data []byte, st *ScanStats, fn func(Event)) {
	st.Lines += int64(bytes.Count(data, []byte{'\n'}))
	st.Skipped += countLong(data)
	for off := 0; off < len(data); {
		i := bytes.Index(data[off:], candidate)
		if i < 0 {
			return
		}
		i += off
		start := bytes.LastIndexByte(data[:i], '\n') + 1
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += i
		}
		if ev := Classify(data[start:end]); ev.Kind != KindNone {
			fn(ev)
		}
		off = end + 1
	}
}

// countLong counts lines longer than MaxLineLen without looking at every line: such a line
// covers at least one whole aligned block of MaxLineLen/2 bytes, so only blocks without a
// newline (rare) need a closer look.
func countLong(data []byte) int64 {
	const block = MaxLineLen / 2
	var n int64
	for b := 0; b+block <= len(data); b += block {
		if bytes.IndexByte(data[b:b+block], '\n') >= 0 {
			continue
		}
		start := bytes.LastIndexByte(data[:b], '\n') + 1
		end := bytes.IndexByte(data[b:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += b
		}
		if end-start > MaxLineLen {
			n++
		}
		b = (end / block) * block // continue after this line
	}
	return n
}
