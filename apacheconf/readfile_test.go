//go:build linux

// Linux only: the cases use FIFOs, /dev/zero and /proc files, the things tenants can point
// the agent's paths at on a cPanel host.

package apacheconf

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hangBound is how long a read may take before the test calls it hung. Every case here
// returns in microseconds; the bound only turns a regression (a blocking open of a FIFO)
// into a failure instead of a suite that never ends.
const hangBound = 5 * time.Second

// within runs f on another goroutine and fails the test if it has not returned within
// hangBound. f only records results; the caller checks them afterwards, on the test's
// goroutine, as t.Fatal requires.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangBound):
		t.Fatalf("%s still blocked after %v", what, hangBound)
	}
}

func mkfifo(t *testing.T, p string) {
	t.Helper()
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadFile(t *testing.T) {
	const limit = 1024
	exact := bytes.Repeat([]byte("a"), limit)
	cases := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to read
		limit   int64
		want    []byte   // content, when no error is expected
		wantErr error    // errors.Is target
		msg     []string // substrings of the error, which must also name the path read
	}{
		{
			name:    "fifo",
			setup:   func(t *testing.T, dir string) string { p := filepath.Join(dir, "cert"); mkfifo(t, p); return p },
			wantErr: ErrNotRegular,
			msg:     []string{"cert is a named pipe (FIFO), not a regular file"},
		},
		{
			name:    "symlink to /dev/zero",
			setup:   func(t *testing.T, dir string) string { return symlink(t, "/dev/zero", filepath.Join(dir, "cert")) },
			wantErr: ErrNotRegular,
			msg:     []string{"cert is a character device"},
		},
		{
			name:    "directory",
			setup:   func(t *testing.T, dir string) string { return dir },
			wantErr: ErrNotRegular,
			msg:     []string{"is a directory"},
		},
		{
			name:    "over the limit",
			setup:   func(t *testing.T, dir string) string { return write(t, filepath.Join(dir, "f"), append(exact, 'b')) },
			wantErr: ErrTooLarge,
			msg:     []string{"f is 1.0 KiB, over the size limit of 1 KiB"},
		},
		{
			// A sparse 3.2 GiB file is refused from its fstat size, before any read.
			name: "sparse and huge",
			setup: func(t *testing.T, dir string) string {
				p := write(t, filepath.Join(dir, "f"), nil)
				if err := os.Truncate(p, 3435973837); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: ErrTooLarge,
			msg:     []string{"is 3.2 GiB, over the size limit of 1 KiB"},
		},
		{
			// /proc files report size 0 and have content: the limit+1 read bound catches them.
			name:    "size 0 but more than the limit",
			setup:   func(t *testing.T, dir string) string { return "/proc/self/status" },
			limit:   16,
			wantErr: ErrTooLarge,
			msg:     []string{"/proc/self/status grew past 16 B while being read"},
		},
		{
			name:  "exactly the limit",
			setup: func(t *testing.T, dir string) string { return write(t, filepath.Join(dir, "f"), exact) },
			want:  exact,
		},
		{
			name:  "empty",
			setup: func(t *testing.T, dir string) string { return write(t, filepath.Join(dir, "f"), nil) },
			want:  []byte{},
		},
		{
			// cPanel paths are symlinked (/etc/apache2/logs -> ../../var/log/apache2).
			name: "symlink to a regular file",
			setup: func(t *testing.T, dir string) string {
				write(t, filepath.Join(dir, "real"), []byte("SSLUseStapling on\n"))
				return symlink(t, "real", filepath.Join(dir, "link"))
			},
			want: []byte("SSLUseStapling on\n"),
		},
		{
			name:    "missing",
			setup:   func(t *testing.T, dir string) string { return filepath.Join(dir, "nothing") },
			wantErr: fs.ErrNotExist,
			msg:     []string{"nothing"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.setup(t, t.TempDir())
			lim := c.limit
			if lim == 0 {
				lim = limit
			}
			var got []byte
			var err error
			within(t, "ReadFile("+p+")", func() { got, err = ReadFile(p, lim) })
			if c.wantErr == nil {
				if err != nil || !bytes.Equal(got, c.want) {
					t.Fatalf("got %d bytes, %v; want %d bytes", len(got), err, len(c.want))
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want errors.Is %v", err, c.wantErr)
			}
			for _, m := range append(c.msg, p) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("err = %q, want it to contain %q", err, m)
				}
			}
		})
	}
}

func TestOpenRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "error_log")
	mkfifo(t, fifo)
	var err error
	within(t, "OpenRegular(FIFO)", func() { _, _, err = OpenRegular(fifo) })
	if !errors.Is(err, ErrNotRegular) {
		t.Fatalf("FIFO: err = %v, want ErrNotRegular", err)
	}

	// No size cap, and the file comes back positioned at 0 with its fstat information.
	p := write(t, filepath.Join(dir, "big"), bytes.Repeat([]byte("x\n"), 2*MaxSmallFile))
	f, info, err := OpenRegular(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if info.Size() != 4*MaxSmallFile || !info.Mode().IsRegular() {
		t.Fatalf("info %v size %d", info.Mode(), info.Size())
	}
	if off, err := f.Seek(0, 1); off != 0 || err != nil {
		t.Fatalf("offset %d, %v", off, err)
	}
}

// An Include naming a FIFO (a tenant's userdata include, say) must fail naming it, at once.
func TestReadConfigIncludesFIFO(t *testing.T) {
	for _, c := range []struct{ name, include string }{
		{"Include", "Include /etc/apache2/conf.d/userdata/ssl/2_4/u/u.example/evil.conf"},
		{"IncludeOptional glob", "IncludeOptional /etc/apache2/conf.d/userdata/ssl/2_4/u/u.example/*.conf"},
	} {
		t.Run(c.name, func(t *testing.T) {
			const fifo = "/etc/apache2/conf.d/userdata/ssl/2_4/u/u.example/evil.conf"
			l := ea4Tree(t, map[string]string{"/etc/apache2/conf/httpd.conf": c.include + "\n"})
			if err := os.MkdirAll(filepath.Dir(l.Path(fifo)), 0o755); err != nil {
				t.Fatal(err)
			}
			mkfifo(t, l.Path(fifo))
			var err error
			within(t, "ReadConfig", func() { _, err = ReadConfig(l) })
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "read "+fifo+":") ||
				!strings.Contains(err.Error(), "named pipe (FIFO)") {
				t.Fatalf("err = %v, want ErrNotRegular naming %s", err, fifo)
			}
		})
	}
}

// paths.conf stays optional (missing is fine, through ReadFile's errors), but one that is a
// FIFO or over MaxSmallFile is an error naming it, not a hang or a huge read.
func TestDetectPathsConf(t *testing.T) {
	for _, c := range []struct {
		name    string
		setup   func(t *testing.T, p string)
		wantErr error
	}{
		{"missing", func(t *testing.T, p string) {}, nil},
		{"fifo", func(t *testing.T, p string) { mkfifo(t, p) }, ErrNotRegular},
		{"symlink to /dev/zero", func(t *testing.T, p string) { symlink(t, "/dev/zero", p) }, ErrNotRegular},
		{"over MaxSmallFile", func(t *testing.T, p string) {
			write(t, p, nil)
			if err := os.Truncate(p, MaxSmallFile+1); err != nil {
				t.Fatal(err)
			}
		}, ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, map[string]string{"/etc/cpanel/ea4/is_ea4": ""})
			c.setup(t, HostPath(root, ea4PathsConf))
			var err error
			within(t, "Detect", func() { _, err = Detect(root) })
			if c.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), ea4PathsConf) {
				t.Fatalf("err = %v, want errors.Is %v naming %s", err, c.wantErr, ea4PathsConf)
			}
		})
	}
}

func write(t *testing.T, p string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func symlink(t *testing.T, target, p string) string {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	return p
}
