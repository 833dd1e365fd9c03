package apacheconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tempPrefix marks our temporary files so a later run can remove ones a crash left behind.
// The suffix is not ".conf", so no `Include dir/*.conf` glob can pick one up.
const tempPrefix = ".stapling-agent-"

// ErrChanged means the file no longer holds the snapshot's bytes: someone (an admin in WHM's
// Include Editor) wrote it between our read and our write. Nothing was replaced.
var ErrChanged = errors.New("changed since it was read")

// FileSnapshot is a file's exact previous state, enough to put it back byte for byte.
type FileSnapshot struct {
	Path    string // path on this machine (already under the root)
	Exists  bool
	Data    []byte
	Mode    fs.FileMode
	UID     int
	GID     int
	Symlink bool // the path is a symlink; we refuse to replace it

	skipCheck bool // Restore: replace unconditionally
}

// Snapshot reads path's current bytes, mode and owner. A missing file is a valid snapshot
// (Exists false). Anything but a regular file is an error: we never replace a directory,
// device or symlink with a file.
func Snapshot(p string) (*FileSnapshot, error) {
	s := &FileSnapshot{Path: p, Mode: 0o644, UID: -1, GID: -1}
	info, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("%s is a symlink; refusing to replace it (edit its target, or replace the link with a file)", p)
	case info.IsDir():
		return nil, fmt.Errorf("%s is a directory, not a file", p)
	case !info.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	s.Exists, s.Data, s.Mode = true, data, info.Mode().Perm()
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		s.UID, s.GID = int(st.Uid), int(st.Gid)
	}
	return s, nil
}

// WriteAtomic replaces the snapshot's file with data, keeping its mode and owner: write a temp
// file in the same directory, fsync it, rename it over the file, fsync the directory. A reader
// (or Apache) sees either the old bytes or the new, never a mix; a crash leaves at most a temp
// file, which CleanTemps removes.
func (s *FileSnapshot) WriteAtomic(data []byte) error {
	// Compare before replacing, so an edit made since Snapshot is not silently overwritten.
	// (The window left, between this read and the rename, is microseconds.)
	check := func() error {
		if !s.skipCheck && !s.unchanged() {
			return fmt.Errorf("%s %w", s.Path, ErrChanged)
		}
		return nil
	}
	return replace(s.Path, data, s.Mode, s.UID, s.GID, check)
}

// WriteFileAtomic writes data to path the same way, with mode, for files that are ours alone
// (audit output for node_exporter's textfile collector and the Ansible fact): a reader never
// sees half a file.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	return replace(path, data, mode, -1, -1, nil)
}

// replace writes a temp file beside path (mode, and owner uid:gid when >= 0 and we are root),
// fsyncs it, runs beforeRename (which may veto), renames it over path and fsyncs the directory.
func replace(path string, data []byte, mode fs.FileMode, uid, gid int, beforeRename func() error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		return fail(fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := f.Chmod(mode); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", tmp, err))
	}
	if uid >= 0 && os.Geteuid() == 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fail(fmt.Errorf("chown %s: %w", tmp, err))
		}
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("fsync %s: %w", tmp, err))
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if beforeRename != nil {
		if err := beforeRename(); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return syncDir(dir)
}

// Unchanged reports whether the file still holds the snapshot's bytes (or is still absent).
func (s *FileSnapshot) Unchanged() bool { return s.unchanged() }

func (s *FileSnapshot) unchanged() bool {
	data, err := os.ReadFile(s.Path)
	if !s.Exists {
		return errors.Is(err, fs.ErrNotExist)
	}
	return err == nil && bytes.Equal(data, s.Data)
}

// Restore puts the snapshot's bytes back exactly, or removes the file if it did not exist.
func (s *FileSnapshot) Restore() error {
	if !s.Exists {
		if err := os.Remove(s.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", s.Path, err)
		}
		return syncDir(filepath.Dir(s.Path))
	}
	// Restoring replaces whatever we wrote: no comparison against the old bytes.
	cur := *s
	cur.Exists = false
	cur.Data = nil
	cur.skipCheck = true
	return cur.WriteAtomic(s.Data)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// CleanTemps removes temp files an interrupted WriteAtomic left next to p, and returns them.
func CleanTemps(p string) ([]string, error) {
	dir := filepath.Dir(p)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir, err)
	}
	prefix := tempPrefix + filepath.Base(p) + "."
	var removed []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), ".tmp") {
			full := filepath.Join(dir, e.Name())
			if err := os.Remove(full); err != nil {
				return removed, fmt.Errorf("remove stale temp file %s: %w", full, err)
			}
			removed = append(removed, full)
		}
	}
	return removed, nil
}
