package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// keepBackups bounds the backup directory: a handful of remediations a day for years would
// otherwise grow it forever. Twenty covers any rollback an operator would still want.
const keepBackups = 20

// State is the agent's directory (/var/lib/stapling-agent, mode 0700): the lock, the journal
// of every action taken, and backups of the include's previous bytes.
type State struct {
	Dir string
	now func() time.Time
}

// JournalEntry is one line of journal.jsonl. Every step of a remediation or revert is written
// before it is taken ("intent") or right after ("written", "done", ...), so a run killed at any
// point leaves a last entry that says what to finish.
type JournalEntry struct {
	Time   time.Time `json:"time"`
	Run    string    `json:"run"`    // one id per invocation
	Action string    `json:"action"` // remediate | revert
	Step   string    `json:"step"`   // intent | written | rebuild | configtest | restart | done | noop | rolled_back | refused | failed
	File   string    `json:"file"`   // host path of the include
	Result string    `json:"result"` // ok | error
	Error  string    `json:"error,omitempty"`
	Backup string    `json:"backup,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// terminal steps end an action; any other last step means the run was interrupted.
func (e JournalEntry) terminal() bool {
	switch e.Step {
	case "done", "noop", "rolled_back", "refused", "failed":
		return true
	}
	return false
}

func (s *State) journalPath() string { return filepath.Join(s.Dir, "journal.jsonl") }

// Ensure creates the state directory with mode 0700 (and tightens an existing one).
func (s *State) Ensure() error {
	if err := os.MkdirAll(filepath.Join(s.Dir, "backups"), 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		return fmt.Errorf("chmod state directory: %w", err)
	}
	return nil
}

// Lock takes the exclusive lock, waiting up to wait. A second agent waits for the first and
// then, re-reading the include, finds the work done.
func (s *State) Lock(ctx context.Context, wait time.Duration) (unlock func(), err error) {
	p := filepath.Join(s.Dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", p, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another stapling-agent has held %s for more than %s", p, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Append writes one journal line and fsyncs it: the journal is what a later run trusts.
func (s *State) Append(e JournalEntry) error {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.journalPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return f.Sync()
}

// Journal reads every entry. A torn last line (a crash mid-write) is skipped.
func (s *State) Journal() ([]JournalEntry, error) {
	data, err := os.ReadFile(s.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	var out []JournalEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e JournalEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Unfinished returns the last entry for file if it is not terminal: a remediation or revert of
// ours was interrupted, and Apache may not be running what the include says.
func (s *State) Unfinished(file string) (*JournalEntry, error) {
	entries, err := s.Journal()
	if err != nil {
		return nil, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; e.File == file && (e.Action == "remediate" || e.Action == "revert") {
			if e.terminal() {
				return nil, nil
			}
			return &e, nil
		}
	}
	return nil, nil
}

// Backup stores data as a timestamped copy and prunes the oldest beyond keepBackups.
func (s *State) Backup(name string, data []byte) (string, error) {
	dir := filepath.Join(s.Dir, "backups")
	p := filepath.Join(dir, fmt.Sprintf("%s.%s", name, s.now().UTC().Format("20060102T150405.000000000Z")))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return "", fmt.Errorf("write backup: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return p, nil
	}
	var mine []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+".") {
			mine = append(mine, e.Name())
		}
	}
	sort.Strings(mine) // timestamps sort lexically
	for len(mine) > keepBackups {
		os.Remove(filepath.Join(dir, mine[0]))
		mine = mine[1:]
	}
	return p, nil
}
