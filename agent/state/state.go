// Package state is stapling-agent's own directory (/var/lib/stapling-agent, mode 0700): the
// lock that serialises changes, the journal of every step of every remediation and revert,
// and backups of the include's previous bytes. The journal is also the daemon's memory across
// restarts (Memory), read the same way by the daemon and the audit.
package state

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
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// keepBackups bounds the backup directory: a handful of remediations a day for years would
// otherwise grow it forever. Twenty covers any rollback an operator would still want.
const keepBackups = 20

// State is the agent's directory (/var/lib/stapling-agent, mode 0700): the lock, the journal
// of every action taken, and backups of the include's previous bytes.
type State struct {
	Dir string
	Now func() time.Time
	// Root is --root: no directory between it and Dir may be a symlink (NoSymlinkBelow).
	Root string
}

// New is the state directory dir (a path on this machine, already under --root).
func New(dir string, now func() time.Time) *State { return &State{Dir: dir, Now: now} }

// Action is what a journaled run does.
type Action string

const (
	Remediate Action = "remediate" // turn stapling off
	Revert    Action = "revert"    // remove our block
)

// Step is one journaled step of a run.
type Step string

const (
	Intent     Step = "intent"      // about to write (journaled before the file changes)
	Written    Step = "written"     // the include holds the new bytes
	Rebuilt    Step = "rebuild"     // rebuildhttpdconf wired the include
	Done       Step = "done"        // config-tested, restarted, verified
	Noop       Step = "noop"        // nothing to do, or the include changed under us
	RolledBack Step = "rolled_back" // failed; the previous bytes are back
	Refused    Step = "refused"     // refused before any change
	Failed     Step = "failed"      // failed (and the message says whether the rollback worked)
)

// Terminal reports whether the step ends a run; any other last step means it was interrupted.
func (s Step) Terminal() bool {
	switch s {
	case Done, Noop, RolledBack, Refused, Failed:
		return true
	}
	return false
}

// Result is a step's outcome.
type Result string

const (
	OK    Result = "ok"
	Error Result = "error"
)

// Entry is one line of journal.jsonl. Every step of a remediation or revert is written before
// it is taken (Intent) or right after (Written, Done, ...), so a run killed at any point leaves
// a last entry that says what to finish.
type Entry struct {
	Time   time.Time `json:"time"`
	Run    string    `json:"run"` // one id per invocation
	Action Action    `json:"action"`
	Step   Step      `json:"step"`
	File   string    `json:"file"` // host path of the include: the key every reader looks up
	// Files lists, in write order, every file of a transaction that changes more than the
	// include (the per-vhost Must-Staple exemption files); absent in single-file entries and
	// in every entry written before exemptions existed.
	Files  []string `json:"files,omitempty"`
	Result Result   `json:"result"`
	Error  string   `json:"error,omitempty"`
	Backup string   `json:"backup,omitempty"`
	Detail string   `json:"detail,omitempty"`
}

func (s *State) journalPath() string { return filepath.Join(s.Dir, "journal.jsonl") }

// Ensure creates the state directory with mode 0700 (and tightens an existing one).
//
// It never follows a symlink: a state directory (or one above it, below --root) that is a
// link would let whoever made it point our chmod, journal and backups anywhere. The chmod
// goes through a descriptor opened with O_NOFOLLOW, so the link cannot be swapped in between.
func (s *State) Ensure() error {
	root := s.Root
	if root == "" {
		root = "/"
	}
	if err := apacheconf.NoSymlinkBelow(root, filepath.Join(s.Dir, "backups")); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, "backups"), 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	for _, d := range []string{s.Dir, filepath.Join(s.Dir, "backups")} {
		fd, err := syscall.Open(d, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open state directory %s: %w (a symlink?)", d, err)
		}
		err = syscall.Fchmod(fd, 0o700)
		if cerr := syscall.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("chmod state directory %s: %w", d, err)
		}
	}
	return nil
}

// Lock takes the exclusive lock, waiting up to wait. A second agent waits for the first and
// then, re-reading the include, finds the work done.
func (s *State) Lock(ctx context.Context, wait time.Duration) (unlock func(), err error) {
	p := filepath.Join(s.Dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
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
func (s *State) Append(e Entry) error {
	if e.Time.IsZero() {
		e.Time = s.Now()
	}
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.journalPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
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
func (s *State) Journal() ([]Entry, error) {
	data, err := os.ReadFile(s.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	var out []Entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e Entry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Unfinished returns the last entry for file (the entry's include, or one of its Files) if it
// is not terminal: a remediation or revert of ours was interrupted, and Apache may not be
// running what the files say. The next run finishes it forward: it plans again from the files
// as they are, writes what is still missing, config-tests and restarts (a transaction writes
// in an order where every prefix is safe to run; see remediate).
func (s *State) Unfinished(file string) (*Entry, error) {
	entries, err := s.Journal()
	if err != nil {
		return nil, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; (e.File == file || slices.Contains(e.Files, file)) && (e.Action == Remediate || e.Action == Revert) {
			if e.Step.Terminal() {
				return nil, nil
			}
			return &e, nil
		}
	}
	return nil, nil
}

// Acts are our finished remediations of file that count against the policy: every terminal
// remediate entry but Noop (nothing was done) and Refused (nothing was changed, so it does not
// spend the daily budget). This is the one reading of "our remediations" in the journal.
func Acts(entries []Entry, file string) []Entry {
	var out []Entry
	for _, e := range entries {
		if e.File == file && e.Action == Remediate && e.Step.Terminal() && e.Step != Noop && e.Step != Refused {
			out = append(out, e)
		}
	}
	return out
}

// LastRemediation is when our last completed remediation of file finished, or zero.
func LastRemediation(entries []Entry, file string) time.Time {
	var t time.Time
	for _, e := range Acts(entries, file) {
		if e.Step == Done && e.Time.After(t) {
			t = e.Time
		}
	}
	return t
}

// Memory is the policy's memory as of at, from the journal's acts on file up to then: the
// daemon restores it at start and the audit replays with it, the same way.
func Memory(entries []Entry, file string, at time.Time) policy.Memory {
	return MemoryAt(Acts(entries, file), at)
}

// MemoryAt is Memory over acts already selected with Acts (a replay asks for many times).
func MemoryAt(acts []Entry, at time.Time) policy.Memory {
	var m policy.Memory
	for _, e := range acts {
		if e.Time.After(at) {
			continue
		}
		if e.Time.After(m.LastAct) {
			m.LastAct = e.Time
		}
		if e.Step == Done && e.Time.Add(policy.EffectGrace).After(m.Cutoff) {
			m.Cutoff = e.Time.Add(policy.EffectGrace)
		}
		if at.Sub(e.Time) < policy.Day {
			m.Acts = append(m.Acts, e.Time)
		}
	}
	return m
}

// Backup stores data as a timestamped copy and prunes the oldest beyond keepBackups.
func (s *State) Backup(name string, data []byte) (string, error) {
	dir := filepath.Join(s.Dir, "backups")
	p := filepath.Join(dir, fmt.Sprintf("%s.%s", name, s.Now().UTC().Format("20060102T150405.000000000Z")))
	// O_EXCL and O_NOFOLLOW: never write through a file or link someone placed there; two
	// backups in the same instant get a suffix.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	for i := 1; errors.Is(err, fs.ErrExist) && i < 100; i++ {
		f, err = os.OpenFile(fmt.Sprintf("%s.%d", p, i), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err == nil {
			p = f.Name()
		}
	}
	if err != nil {
		return "", fmt.Errorf("write backup: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", fmt.Errorf("write backup: %w", err)
	}
	if err := f.Close(); err != nil {
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
