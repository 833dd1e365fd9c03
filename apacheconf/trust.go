package apacheconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUntrusted means a path the agent would act through as root could have been planted or
// replaced by another user.
var ErrUntrusted = errors.New("untrusted path")

// NoSymlinkBelow refuses p when it, or a directory between root and it, is a symlink: a state
// directory or an output directory reached through a link another user made would let them
// point our chmod, journal, backups or output anywhere. Components that do not exist yet are
// fine (they will be created as directories). root itself is the operator's choice.
func NoSymlinkBelow(root, p string) error {
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		rel = strings.TrimPrefix(filepath.Clean(p), "/")
		root = "/"
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "" || part == "." {
			continue
		}
		cur = filepath.Join(cur, part)
		info, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUntrusted, cur, err)
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%w: %s is a symlink; refusing to follow it (make it a real directory owned by root)", ErrUntrusted, cur)
		}
	}
	return nil
}

// TrustedCommand refuses, when we are root, a command file that is not owned by root or is
// writable by group or others, or that sits in a directory (from root down) that is: the
// agent runs it as root, so whoever could write any of them could run anything as root. It
// is the rule the config file already follows. Not root: nothing to protect, no check.
func TrustedCommand(root, path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if !filepath.IsAbs(path) {
		return nil // resolved through PATH (systemd-run): the system's own
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		root, rel = "/", strings.TrimPrefix(path, "/")
	}
	check := func(p string) error {
		info, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Nothing to run (the run will fail and say so); and in trusted directories no
			// other user can create it.
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		switch {
		case ok && st.Uid != 0:
			return fmt.Errorf("%w: %s is owned by uid %d, not root, and the agent would run %s as root", ErrUntrusted, p, st.Uid, path)
		case info.Mode().Perm()&0o022 != 0 && info.Mode()&fs.ModeSticky == 0:
			return fmt.Errorf("%w: %s is writable by group or others (mode %04o), and the agent would run %s as root", ErrUntrusted, p, info.Mode().Perm(), path)
		}
		return nil
	}
	cur := root
	if err := check(cur); err != nil {
		return err
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		if err := check(cur); err != nil {
			return err
		}
	}
	return nil
}

// Trusted checks every command of c with TrustedCommand, including the one a systemd-run
// wrapper runs.
func (c Commands) Trusted(root string) error {
	for _, argv := range [][]string{c.ConfigTest, c.Restart, c.Rebuild} {
		for i, a := range argv {
			if i == 0 || (i > 0 && argv[i-1] == "--") {
				if err := TrustedCommand(root, a); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
