package logwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"time"
)

// PollInterval is how often the follower looks at the file when nothing drives it: the issue's
// latency target (p99 under 1 s) with room to spare, and what mtail settled on.
const PollInterval = 250 * time.Millisecond

// RetireGrace is how long a rotated-away file is still read after the new one appears: during
// a graceful restart, old Apache children keep writing to the old inode until their current
// request ends. It is time, not a number of polls: inotify wake-ups (Waker) add polls, and a
// busy log would otherwise close the old file within milliseconds.
const RetireGrace = 10 * time.Second

// fingerprintLen is how many bytes before our offset we remember to notice a file that was
// truncated and then regrew past our offset between two polls (its size alone looks normal).
const fingerprintLen = 64

// Follower delivers every complete line appended to a log file, once, through cpanellogd's
// rotations. It replaces github.com/nxadm/tail (the design card's library; hpcloud/tail's
// maintained fork), whose every piece on this path breaks one of our guarantees:
// watch/polling.go calls util.Fatal (os.Exit) when stat fails with anything but ENOENT, so an
// unreadable error_log would kill the daemon; tail.go's waitForChanges reopens a renamed file
// without draining the old inode, losing lines Apache wrote just before the rename; its
// truncation check compares sizes only, so a file truncated and regrown past the old offset
// between polls is read from the wrong place; and its timing is time.Sleep(POLL_DURATION), so
// no test can drive it without sleeping. Reading lines was all that would have been left.
//
// The rules, applied by each Poll (as in mtail's filestream.go):
//   - The path names a different file (inode) than the one open: rotation (rename as
//     cpanellogd does, or delete and recreate). The old file is drained to EOF, then kept and
//     read for RetireGrace more (old children still write to it), then closed; the new
//     file is read from its start.
//   - Before reading: the open file is smaller than our offset, or the bytes just before our
//     offset changed: truncation (copytruncate, or truncate-then-regrow). A pending partial
//     line is flushed, and reading restarts at offset 0. Lines written after our last poll
//     and before the truncation exist only in the copy.
//   - The path is missing: keep reading the open file (it was renamed; Apache may still write
//     to it) and wait for the path to come back.
//   - Any error (missing, unreadable) is reported through OnError and retried on the next
//     poll; it is never fatal.
//
// Lines longer than MaxLineLen are skipped and counted. Counters are safe to read while Poll
// works; tests use them as barriers instead of sleeping.
type Follower struct {
	Path    string
	OnError func(error)      // called for each error; nil ignores them
	Now     func() time.Time // the clock for RetireGrace; nil is time.Now

	Opens, Rotations, Truncations, Lines, Skipped, Polls atomic.Int64

	cur     *tracked
	retired []*tracked
	buf     []byte // read buffer, reused across polls
}

type tracked struct {
	f       *os.File
	info    fs.FileInfo
	off     int64
	partial []byte
	skip    bool // inside an over-long line
	fp      []byte
	retire  time.Time // when a rotated-away file is closed
}

// Start opens the file now (if it exists) at offset start, or at its end when start < 0, and
// returns the offset chosen. Lines after it are what Poll delivers. Without Start, the first
// Poll opens the file at its beginning.
func (fl *Follower) Start(start int64) (int64, error) {
	t, err := fl.open()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	size := t.info.Size()
	if start < 0 || start > size {
		start = size
	}
	t.off = start
	fl.cur = t
	return start, nil
}

// open opens the path through openRegular: O_NONBLOCK, so a FIFO put at the path cannot
// block the daemon's loop (and its watchdog keep-alive) in open(2), and the regular-file
// check on the fstat of the open descriptor, so a FIFO or a device is reported through
// OnError and retried instead of read.
func (fl *Follower) open() (*tracked, error) {
	f, info, err := openRegular(fl.Path)
	if err != nil {
		return nil, err
	}
	fl.Opens.Add(1)
	return &tracked{f: f, info: info}, nil
}

// Close releases open files, flushing nothing.
func (fl *Follower) Close() {
	for _, t := range fl.retired {
		t.f.Close()
	}
	fl.retired = nil
	if fl.cur != nil {
		fl.cur.f.Close()
		fl.cur = nil
	}
}

// Poll reads everything new and applies the rotation and truncation rules once.
func (fl *Follower) Poll(fn func([]byte)) {
	defer fl.Polls.Add(1)
	// Files rotated away first: their lines are older.
	kept := fl.retired[:0]
	now := fl.now()
	for _, t := range fl.retired {
		fl.read(t, fn)
		if now.Before(t.retire) {
			kept = append(kept, t)
			continue
		}
		fl.flush(t, fn)
		t.f.Close()
	}
	fl.retired = kept

	if fl.cur == nil {
		t, err := fl.open()
		if err != nil {
			fl.report(err)
			return
		}
		fl.cur = t
	}
	t := fl.cur
	// Truncation first, before reading from a stale offset: fstat the open file.
	if info, err := t.f.Stat(); err == nil && (info.Size() < t.off || fl.rewritten(t)) {
		fl.Truncations.Add(1)
		fl.flush(t, fn)
		t.off, t.fp, t.skip = 0, nil, false
	}
	fl.read(t, fn)

	info, err := os.Stat(fl.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Renamed or deleted; keep draining the open file until a new one appears.
	case err != nil:
		fl.report(fmt.Errorf("stat %s: %w", fl.Path, err))
	case !os.SameFile(info, t.info):
		nt, err := fl.open()
		if err != nil {
			fl.report(err) // e.g. recreated unreadable: keep the old one, retry next poll
			return
		}
		fl.Rotations.Add(1)
		fl.read(t, fn) // lines written between the read above and the stat: old before new
		t.retire = fl.now().Add(RetireGrace)
		fl.retired = append(fl.retired, t)
		fl.cur = nt
		fl.read(nt, fn)
	}
}

func (fl *Follower) now() time.Time {
	if fl.Now != nil {
		return fl.Now()
	}
	return time.Now()
}

// rewritten reports whether the bytes just before our offset are no longer what we read:
// the file was truncated and regrew past our offset between two polls.
func (fl *Follower) rewritten(t *tracked) bool {
	if len(t.fp) == 0 {
		return false
	}
	buf := make([]byte, len(t.fp))
	n, err := t.f.ReadAt(buf, t.off-int64(len(t.fp)))
	return err != nil && err != io.EOF || !bytes.Equal(buf[:n], t.fp)
}

// readBuf is the read size; lines are cut out of it, partial tails carried over.
const readBuf = 256 * 1024

func (fl *Follower) read(t *tracked, fn func([]byte)) {
	if fl.buf == nil {
		fl.buf = make([]byte, readBuf)
	}
	buf := fl.buf
	for {
		n, err := t.f.ReadAt(buf, t.off)
		if n > 0 {
			fl.consume(t, buf[:n], fn)
			t.off += int64(n)
			tail := buf[max(0, n-fingerprintLen):n]
			if len(tail) < fingerprintLen && len(t.fp) > 0 {
				// Keep up to fingerprintLen bytes across short reads.
				tail = append(append([]byte(nil), t.fp...), tail...)
				tail = tail[max(0, len(tail)-fingerprintLen):]
			}
			t.fp = append(t.fp[:0], tail...)
		}
		if err != nil {
			if err != io.EOF {
				fl.report(fmt.Errorf("read %s: %w", fl.Path, err))
			}
			return
		}
	}
}

func (fl *Follower) consume(t *tracked, data []byte, fn func([]byte)) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !t.skip {
				t.partial = append(t.partial, data...)
				if len(t.partial) > MaxLineLen {
					t.partial, t.skip = t.partial[:0], true
				}
			}
			return
		}
		line := data[:i]
		data = data[i+1:]
		switch {
		case t.skip:
			t.skip = false
			fl.Lines.Add(1)
			fl.Skipped.Add(1)
		case len(t.partial) > 0:
			t.partial = append(t.partial, line...)
			fl.emit(t.partial, fn)
			t.partial = t.partial[:0]
		default:
			fl.emit(line, fn)
		}
	}
}

func (fl *Follower) emit(line []byte, fn func([]byte)) {
	fl.Lines.Add(1)
	if len(line) > MaxLineLen {
		fl.Skipped.Add(1)
		return
	}
	fn(line)
}

// flush delivers a pending partial line: the file it was in will not complete it.
func (fl *Follower) flush(t *tracked, fn func([]byte)) {
	if len(t.partial) > 0 && !t.skip {
		fl.emit(t.partial, fn)
	}
	t.partial, t.skip = t.partial[:0], false
}

func (fl *Follower) report(err error) {
	if fl.OnError != nil {
		fl.OnError(err)
	}
}
