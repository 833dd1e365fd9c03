package logwatch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
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

// candidate is the prefilter for the default format: every stapling event is written by
// mod_ssl, as "[ssl:level]". A Format has its own (Format.needle).
var candidate = []byte("[ssl:")

// ScanStats describes what a history scan read.
type ScanStats struct {
	Files   []string // in reading order, oldest first
	Bytes   int64    // bytes read (after decompression)
	Lines   int64
	Skipped int64 // lines longer than MaxLineLen
	// Disordered counts files whose lines were out of time order where the window search
	// looked (forged dates, a clock step): they were read whole instead.
	Disordered int64
}

// ScanHistory is ScanHistoryContext without cancellation, for callers that have no context.
func ScanHistory(path string, since, until time.Time, fn func(Event)) (ScanStats, error) {
	return ScanHistoryContext(context.Background(), path, since, until, fn)
}

// ScanHistoryContext calls fn, in log order, for every event from since (inclusive) to until
// (exclusive) in the error log at path and, when the window reaches back past that file's
// first line, its rotated predecessors: cpanellogd renames error_log to error_log.bkup and
// gzips it into archive/error_log-MM-YYYY.gz (FACTS.md section 5). A missing predecessor is
// fine; a missing or unreadable current log is an error, and so is any of these paths
// reaching a FIFO, a device or a directory (see openRegular).
//
// Once ctx is done the scan stops within one read's worth of work (bufSize of log, a
// probeLimit binary-search probe, or 64 KiB of a gzip archive's compressed input, which
// bounds an archive crafted to decompress without end) and returns an error wrapping
// ctx.Err().
func ScanHistoryContext(ctx context.Context, path string, since, until time.Time, fn func(Event)) (ScanStats, error) {
	return ScanHistoryFormat(ctx, path, nil, since, until, fn)
}

// ScanHistoryFormat is ScanHistoryContext for a log written in the ErrorLogFormat f (nil:
// Apache's default). Lines are classified with f.Classify, the window search reads times
// with f.Time, and the prefilter is the text Apache writes around "ssl" in f's %m field,
// which every event line holds, so the counts equal those of classifying every line.
// All files of the history are read with the one format: lines written before a change of
// ErrorLogFormat (or by Apache before it read its configuration) are not events.
func ScanHistoryFormat(ctx context.Context, path string, f *Format, since, until time.Time, fn func(Event)) (ScanStats, error) {
	var st ScanStats
	files, err := historyFiles(ctx, path, f, since)
	if err != nil {
		return st, err
	}
	// Scan oldest first. Each file covers [its first timestamp, the next newer file's first
	// timestamp): an archive that already holds error_log.bkup's lines does not count twice.
	var jobs []scanJob
	for i := len(files) - 1; i >= 0; i-- {
		end := until
		if i > 0 && !files[i-1].first.IsZero() && files[i-1].first.Before(end) {
			end = files[i-1].first
		}
		jobs = append(jobs, scanJob{file: files[i], since: since, until: end})
	}
	return scanJobs(ctx, jobs, f, fn)
}

type histFile struct {
	path  string
	gz    bool
	first time.Time // zero when the file has no timestamped line in its head
}

// historyFiles lists the current log and as many predecessors as the window needs, newest first.
func historyFiles(ctx context.Context, path string, lf *Format, since time.Time) ([]histFile, error) {
	cur := histFile{path: path}
	first, err := firstTime(ctx, cur, lf)
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
		t, err := firstTime(ctx, f, lf)
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

// openRegular opens path as apacheconf.OpenRegular does, and for the same reasons: open(2)
// of a FIFO without O_NONBLOCK waits, without end and deaf to SIGTERM, for a writer
// (fifo(7)), and a device such as /dev/zero never reaches EOF. O_NOCTTY keeps a terminal
// device from becoming our controlling terminal. Symlinks are followed: EA4 reaches the log
// through /etc/apache2/logs -> ../../var/log/apache2. The type is checked by fstat on the
// open descriptor, so the path cannot be swapped between check and open.
//
// It is a copy, not an import: logwatch reads and classifies the log and imports nothing of
// ours, while apacheconf is the layout and command-runner package; making the log reader
// depend on the command runner for twenty lines is the wrong way round (STYLE.md: a helper
// lives next to its user).
//
// O_NONBLOCK stays set: Linux ignores it for regular files on disk filesystems, and with it
// a regular-typed kernel file that waits for data (/proc/kmsg) fails with EAGAIN instead of
// blocking.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err // an *fs.PathError: errors.Is(err, fs.ErrNotExist) holds
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is %s, %w", path, fileKind(info.Mode()), ErrNotRegular)
	}
	return f, info, nil
}

// ErrNotRegular: a log path reaches a FIFO, a device, a directory or a socket.
var ErrNotRegular = errors.New("not a regular file")

// fileKind names a non-regular file type for an error message.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return fmt.Sprintf("an irregular file (mode %v)", m)
}

// OpenLog opens a log file as the history scan reads it: a regular file only (a FIFO or a
// device is refused at once), gzip-decompressed when gz, its reads failing once ctx is done.
// NGINX's error-log scan (agent/frontend) reads its rotated files through it too.
func OpenLog(ctx context.Context, path string, gz bool) (io.ReadCloser, error) {
	return open(ctx, histFile{path: path, gz: gz})
}

// ContextReader is r with reads that fail once ctx is done.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

// ctxReader fails reads once ctx is done. It sits under the gzip reader, whose inflater
// can consume any amount of input without returning (a stream of empty deflate blocks), so
// that only reads of the file itself can stop it.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// gzInput is how much compressed input the gzip reader takes per read of the file, and so
// how much it can inflate between two looks at ctx.
const gzInput = 64 * 1024

func open(ctx context.Context, f histFile) (io.ReadCloser, error) {
	fh, _, err := openRegular(f.path)
	if err != nil {
		return nil, err
	}
	if !f.gz {
		return fh, nil
	}
	// A bufio.Reader is a flate.Reader (io.ByteReader), so gzip reads through it directly.
	// klauspost/compress's gzip, not the standard library's: the same format and errors,
	// about a fifth less CPU to inflate a month of error_log (scripts/bench-audit.sh), which
	// is most of a year's audit.
	zr, err := gzip.NewReader(bufio.NewReaderSize(ctxReader{ctx, fh}, gzInput))
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
func firstTime(ctx context.Context, f histFile, lf *Format) (time.Time, error) {
	r, err := open(ctx, f)
	if err != nil {
		return time.Time{}, err
	}
	defer r.Close()
	t, _ := firstTimeIn(io.LimitReader(r, probeLimit), lf)
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("read %s: %w", f.path, err)
	}
	return t, nil
}

// firstTimeIn returns the first timestamp in r that lf.Time can read.
func firstTimeIn(r io.Reader, lf *Format) (time.Time, bool) {
	// 8 KiB: a probe needs one timestamped line, and the window search makes a few dozen
	// probes (samples included); small reads keep a one-hour audit a handful of page reads.
	br := bufio.NewReaderSize(r, 8*1024)
	for {
		line, err := br.ReadSlice('\n')
		if t, ok := lf.Time(line); ok {
			return t, true
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return time.Time{}, false
		}
	}
}

func scanFile(ctx context.Context, f histFile, lf *Format, since, until time.Time, st *ScanStats, fn func(Event), flush func() error) error {
	r, err := open(ctx, f)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.path, err)
	}
	defer r.Close()
	st.Files = append(st.Files, f.path)
	skipPartial := false
	if fh, ok := r.(*os.File); ok && !f.first.IsZero() && f.first.Before(since.Add(-disorderSlack)) {
		off, err := seekTime(ctx, fh, lf, since.Add(-disorderSlack), until)
		if err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		if off < 0 {
			// Lines out of order: the search cannot be trusted, read the whole file.
			st.Disordered++
			off = 0
		}
		if _, err := fh.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		skipPartial = off > 0
	}
	inWindow := func(ev Event) {
		if !ev.Time.Before(since) && ev.Time.Before(until) {
			fn(ev)
		}
	}
	err = errCannotMap
	if fh, ok := r.(*os.File); ok {
		// A plain file is read through mappings (scanMapped: no copy of every byte), or, where
		// the kernel will not map it, with read() below, from where it stands.
		off, serr := fh.Seek(0, io.SeekCurrent)
		if serr != nil {
			return fmt.Errorf("read %s: %w", f.path, serr)
		}
		err = scanMapped(ctx, fh, off, lf, skipPartial, st, inWindow, flush)
	}
	if errors.Is(err, errCannotMap) {
		err = scanStream(ctx, r, lf, skipPartial, st, inWindow, flush)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", f.path, err)
	}
	return nil
}

// seekTime finds, by binary search on line timestamps, an offset at or before the first line
// stamped at or after t. The offset may fall inside a line; the caller skips to the next one.
func seekTime(ctx context.Context, f *os.File, lf *Format, t, until time.Time) (int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	// Every probe's (offset, time) is kept: a raw line a tenant wrote with a forged date can
	// steer a binary search only by being probed, and then it shows as disorder against the
	// other probes (a date before one read at a smaller offset, or after until). The first and
	// the last line, and evenly spaced samples, are probed too, so a forged block appended
	// at the end is caught even when the search would not land in it.
	var probes []probe
	at := func(off int64) (time.Time, bool, error) {
		if err := ctx.Err(); err != nil {
			return time.Time{}, false, err
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return time.Time{}, false, err
		}
		br := bufio.NewReaderSize(io.LimitReader(f, probeLimit), 8*1024)
		if off > 0 {
			// Skip the partial line at off.
			if _, err := br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return time.Time{}, false, nil
			}
		}
		pt, ok := firstTimeIn(br, lf)
		if ok {
			probes = append(probes, probe{off, pt})
		}
		return pt, ok, nil
	}
	size := info.Size()
	for i := int64(0); i <= disorderSamples; i++ {
		if _, _, err := at(size * i / (disorderSamples + 1)); err != nil {
			return 0, err
		}
	}
	if _, _, err := at(max(0, size-probeLimit/4)); err != nil {
		return 0, err
	}
	lo, hi := int64(0), size
	for hi-lo > probeLimit {
		mid := lo + (hi-lo)/2
		pt, ok, err := at(mid)
		if err != nil {
			return 0, err
		}
		if ok && pt.Before(t) {
			lo = mid
		} else {
			hi = mid
		}
	}
	if disordered(probes, until) {
		return -1, nil
	}
	return lo, nil
}

// disorderSamples: evenly spaced probes before the search, besides the first and last line.
const disorderSamples = 16

type probe struct {
	off int64
	t   time.Time
}

// disordered reports whether the probes, in file order, go back in time by more than
// disorderSlack, or reach past until by more than it.
func disordered(probes []probe, until time.Time) bool {
	sort.Slice(probes, func(i, j int) bool { return probes[i].off < probes[j].off })
	var latest time.Time
	for _, p := range probes {
		if p.t.After(until.Add(disorderSlack)) || (!latest.IsZero() && p.t.Before(latest.Add(-disorderSlack))) {
			return true
		}
		if p.t.After(latest) {
			latest = p.t
		}
	}
	return false
}

// scanStream reads r with one fixed buffer. For each run of complete lines it counts lines,
// counts over-long lines, and finds candidates with the "[ssl:" prefilter (findAll: one
// vectorised pass that also counts the lines); only candidate lines are parsed. A line longer than the buffer is skipped whole,
// its bytes dropped as they arrive, so memory stays at bufSize. ctx is checked before each
// read: cancellation takes effect within one buffer's worth of work.
//
// flush, when not nil, is called after each buffer's lines (the events of a buffer and the
// stats that include it are then complete); an error from it ends the scan.
func scanStream(ctx context.Context, r io.Reader, lf *Format, skipPartial bool, st *ScanStats, fn func(Event), flush func() error) error {
	buf := make([]byte, bufSize)
	n := 0           // bytes in buf
	discard := false // inside a line longer than the buffer
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
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
		scanLines(data[:end], lf, st, fn)
		if flush != nil {
			if err := flush(); err != nil {
				return err
			}
		}
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

// scanLines handles a run of complete lines: it counts them and the over-long ones, and
// classifies each line that holds the needle (findAll), once.
func scanLines(data []byte, lf *Format, st *ScanStats, fn func(Event)) {
	needle := candidate
	if lf != nil {
		needle = lf.needle
	}
	st.Skipped += countLong(data)
	done := 0 // data[:done] is lines already classified
	st.Lines += findAll(data, needle, func(i int) {
		if i < done {
			return // the needle again, in a line already classified
		}
		start := bytes.LastIndexByte(data[:i], '\n') + 1
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += i
		}
		if ev := lf.Classify(data[start:end]); ev.Kind != KindNone {
			fn(ev)
		}
		done = end + 1
	})
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
