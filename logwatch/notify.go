package logwatch

import (
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/fsnotify/fsnotify"
)

// Waker turns inotify events for one log file into wake-ups for Follower.Poll, so a line
// Apache writes is read at once instead of at the next PollInterval tick. It only says "look
// now": it never decides what changed, and the caller keeps its PollInterval ticker running
// beside it, because polling stays the truth. inotify can overflow its queue and drop events;
// it does not work on some network filesystems (NFS, CIFS, FUSE mounts see no remote writes);
// and after a rotation by rename, writes by old Apache children to the retired file arrive
// under the file's new name, which a directory watch cannot tie back to our path reliably
// (renames race with writes, and the file may be renamed again). The ticker still reads the
// retired file during its grace (RetireGrace, measured in time, not polls, so wake-ups do not
// shorten it), so those lines are late by at most PollInterval, never lost.
//
// If the path is a symlink, writes to its target happen in the target's directory and do not
// wake; the poll covers them too. If the directory itself is removed or renamed, that wakes
// once and the Waker then stays silent.
type Waker struct {
	// Errors counts watcher errors (e.g. inotify queue overflow, fsnotify.ErrEventOverflow).
	// An overflow also wakes, since events may have been lost.
	Errors atomic.Int64

	dir, base string
	watcher   *fsnotify.Watcher
	c         chan struct{}
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewWaker watches the directory holding path (not the file itself, so a rotation by rename
// or delete+create is seen, and the new file is watched without re-adding). It returns an
// error if inotify is unavailable (e.g. the per-user instance or watch limit is reached, or
// the directory does not exist); callers then just poll.
func NewWaker(path string) (*Waker, error) {
	path = filepath.Clean(path)
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Waker{
		dir:     filepath.Dir(path),
		base:    filepath.Base(path),
		watcher: watcher,
		c:       make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := watcher.Add(w.dir); err != nil {
		return nil, errors.Join(err, watcher.Close())
	}
	go w.run()
	return w, nil
}

// C delivers a wake-up whenever the file named by path is written (a truncation arrives as a
// write), created, removed or renamed, or the directory itself is removed or renamed.
// Wake-ups are coalesced: C holds at most one, and the watcher never blocks on it. Chmod is
// ignored, and so is every event for another name in the directory (access_log, written on
// every request, sits next to error_log).
func (w *Waker) C() <-chan struct{} { return w.c }

// Close stops the watcher goroutine and releases the inotify fd; once it returns, no
// goroutine of the Waker is left. Safe to call more than once.
func (w *Waker) Close() error {
	w.closeOnce.Do(func() {
		close(w.quit)
		w.closeErr = w.watcher.Close() // waits for fsnotify's reader goroutine
		<-w.done
	})
	return w.closeErr
}

func (w *Waker) run() {
	defer close(w.done)
	for {
		select {
		case <-w.quit:
			return
		case ev, ok := <-w.watcher.Events:
			if !ok {
				return
			}
			if w.matches(ev) {
				w.wake()
			}
		case err, ok := <-w.watcher.Errors:
			if !ok {
				return
			}
			w.handleError(err)
		}
	}
}

// matches reports whether ev is about our path (or the directory holding it). After a rename
// away (error_log -> error_log.bkup), writes to the old file carry the new name and do not
// match: see the type's comment for why the poll covers them.
func (w *Waker) matches(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod || ev.Op == 0 {
		return false
	}
	if filepath.Clean(ev.Name) == w.dir {
		return ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	}
	return filepath.Base(ev.Name) == w.base && filepath.Dir(ev.Name) == w.dir
}

func (w *Waker) handleError(err error) {
	w.Errors.Add(1)
	// Other errors (a failed read of the inotify fd) are not woken for: fsnotify retries them
	// in a loop, and a wake for each would turn the poll into a busy loop.
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.wake()
	}
}

func (w *Waker) wake() {
	select {
	case w.c <- struct{}{}:
	default: // one is already pending
	}
}
