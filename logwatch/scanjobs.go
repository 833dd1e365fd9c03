package logwatch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// maxQueued bounds the events a file being read ahead holds for the caller: a month of
// error_log in an outage can hold millions of AH01941 lines, and a file ahead of the one
// being delivered must not keep them all (64Ki events: a few tens of MB at worst).
const maxQueued = 64 * 1024

// scanJob is one file of the history and the part of the window it covers.
type scanJob struct {
	file         histFile
	since, until time.Time
}

// piece is what a reader hands over after each buffer: its events, and the file's stats so
// far (they include that buffer).
type piece struct {
	events []Event
	st     ScanStats
}

// fileRun is the queue between the goroutine reading one file and the caller's goroutine.
type fileRun struct {
	mu      sync.Mutex
	cond    sync.Cond
	pieces  []piece
	queued  int  // events in pieces
	done    bool // the reader returned; err is its error
	stopped bool // the caller gave up: the reader returns at its next buffer
	err     error
}

var errStopped = errors.New("history scan stopped")

// scanJobs reads the files concurrently, at most runtime.GOMAXPROCS at a time, in the
// order given, and calls fn in that order, the events of each file in log order: exactly
// the calls and stats of reading them one after the other. Decompressing a year of gzip
// archives is most of a year's audit; a file waits for a reader only behind the files
// before it, so the oldest file, the one being delivered, always has one. A file's slot is
// given back when the file has been delivered, not when it has been read: at most
// GOMAXPROCS files are read or waiting, so at most GOMAXPROCS x maxQueued events are held.
//
// Stats count what was delivered: a reader ahead of the caller may have read further when
// an error or ctx ends the scan. The caller looks at ctx between buffers, as a single
// reader does, so cancellation still takes effect within one buffer of the file being
// delivered; when the scan ends early (an error, a cancellation) the readers ahead are
// cancelled too, and scanJobs returns after every goroutine it started has.
func scanJobs(ctx context.Context, jobs []scanJob, lf *Format, fn func(Event)) (ScanStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	var st ScanStats
	runs := make([]*fileRun, len(jobs))
	for i := range runs {
		runs[i] = &fileRun{}
		runs[i].cond.L = &runs[i].mu
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	// A slot is taken by a reader and given back when its file is delivered.
	slots := make(chan struct{}, runtime.GOMAXPROCS(0))
	go func() { // starts the readers in order, at most GOMAXPROCS unread or undelivered
		defer wg.Done()
		for i, j := range jobs {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				runs[i].read(ctx, j, lf)
			}()
		}
	}()
	defer func() {
		cancel() // readers ahead of an early end stop at their next buffer
		close(stop)
		for _, r := range runs {
			r.mu.Lock()
			r.stopped = true
			r.cond.Broadcast()
			r.mu.Unlock()
		}
		wg.Wait()
	}()

	for i, r := range runs {
		var cur ScanStats // this file's stats as far as delivered
		var err error
		for {
			r.mu.Lock()
			for len(r.pieces) == 0 && !r.done {
				r.cond.Wait()
			}
			ps := r.pieces
			r.pieces, r.queued = nil, 0
			done, rerr := r.done, r.err
			r.cond.Broadcast()
			r.mu.Unlock()
			for _, p := range ps {
				for _, ev := range p.events {
					fn(ev)
				}
				cur = p.st
				if cerr := ctx.Err(); cerr != nil {
					err = fmt.Errorf("read %s: %w", jobs[i].file.path, cerr)
					break
				}
			}
			if err == nil && done {
				err = rerr // nil: the file is delivered whole
			}
			if err != nil || done {
				break
			}
		}
		st.Files = append(st.Files, cur.Files...)
		st.Bytes += cur.Bytes
		st.Lines += cur.Lines
		st.Skipped += cur.Skipped
		st.Disordered += cur.Disordered
		if err != nil {
			return st, err
		}
		<-slots // file i is delivered: its slot goes to the next file
	}
	return st, nil
}

// read scans one file into r's queue, a piece per buffer, waiting while maxQueued events
// are queued; the last piece has the file's final stats.
func (r *fileRun) read(ctx context.Context, j scanJob, lf *Format) {
	var st ScanStats
	var events []Event
	put := func(wait bool) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for wait && r.queued >= maxQueued && !r.stopped {
			r.cond.Wait()
		}
		if r.stopped {
			return errStopped // the caller is gone
		}
		r.pieces = append(r.pieces, piece{events, st})
		r.queued += len(events)
		events = nil
		r.cond.Broadcast()
		return nil
	}
	err := scanFile(ctx, j.file, lf, j.since, j.until, &st, func(ev Event) { events = append(events, ev) }, func() error { return put(true) })
	_ = put(false) // the last piece; a caller that is gone has stopped reading (errStopped)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done, r.err = true, err
	r.cond.Broadcast()
}
