package apacheconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteAtomicKeepsModeAndOwner(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "inc.conf")
	os.WriteFile(p, []byte("old\n"), 0o640)
	os.Chmod(p, 0o640)
	if os.Geteuid() == 0 {
		os.Chown(p, 12345, 23456)
	}
	s, err := Snapshot(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAtomic([]byte("new\n")); err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(p)
	if info.Mode().Perm() != 0o640 {
		t.Errorf("mode = %o, want 640", info.Mode().Perm())
	}
	if st := info.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 12345 || st.Gid != 23456) {
		t.Errorf("owner = %d:%d, want 12345:23456", st.Uid, st.Gid)
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old\n" {
		t.Fatalf("restored %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestSnapshotMissingFileRestoreRemoves(t *testing.T) {
	p := filepath.Join(t.TempDir(), "inc.conf")
	s, err := Snapshot(p)
	if err != nil || s.Exists {
		t.Fatalf("Snapshot(missing) = %+v, %v", s, err)
	}
	if err := s.WriteAtomic([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(p); info.Mode().Perm() != 0o644 {
		t.Errorf("new file mode %o, want 644", info.Mode().Perm())
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("Restore did not remove a file that did not exist before")
	}
}

func TestSnapshotRefusesNonFiles(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	os.Symlink("nowhere", filepath.Join(dir, "dangling"))
	os.WriteFile(filepath.Join(dir, "target"), nil, 0o644)
	os.Symlink("target", filepath.Join(dir, "link"))
	for name, want := range map[string]string{"adir": "directory", "dangling": "symlink", "link": "symlink"} {
		_, err := Snapshot(filepath.Join(dir, name))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Snapshot(%s) err = %v, want one saying %q", name, err, want)
		}
	}
}

func TestCleanTemps(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "inc.conf")
	stale := filepath.Join(dir, tempPrefix+"inc.conf.123.tmp")
	other := filepath.Join(dir, tempPrefix+"other.conf.123.tmp")
	for _, f := range []string{p, stale, other} {
		os.WriteFile(f, nil, 0o644)
	}
	removed, err := CleanTemps(p)
	if err != nil || len(removed) != 1 || removed[0] != stale {
		t.Fatalf("CleanTemps = %v, %v", removed, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatal("removed another file's temp")
	}
}

// An admin saving the include between our read and our write is not overwritten.
func TestWriteAtomicRefusesChangedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "inc.conf")
	os.WriteFile(p, []byte("old\n"), 0o644)
	s, _ := Snapshot(p)
	os.WriteFile(p, []byte("old\nadmin edit\n"), 0o644)
	if err := s.WriteAtomic([]byte("ours\n")); !errors.Is(err, ErrChanged) {
		t.Fatalf("err = %v, want ErrChanged", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old\nadmin edit\n" {
		t.Fatalf("admin edit lost: %q", b)
	}
	missing, _ := Snapshot(filepath.Join(filepath.Dir(p), "new.conf"))
	os.WriteFile(missing.Path, []byte("created meanwhile\n"), 0o644)
	if err := missing.WriteAtomic([]byte("ours\n")); !errors.Is(err, ErrChanged) {
		t.Fatalf("created file overwritten: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 2 {
		t.Fatalf("temp files left: %v", entries)
	}
}
