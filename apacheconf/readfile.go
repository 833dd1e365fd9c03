package apacheconf

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Size caps for ReadFile. Tenants control some of the paths the agent reads (a certificate
// path in their userdata, an Include'd file, a symlink in their home), so a cap must hold
// against /dev/zero, a sparse file or a file that grows while we read it; each cap is far
// above the legitimate size so that no real host ever meets it.
const (
	// MaxConfigFile bounds one Apache config file or include: cPanel's generated httpd.conf
	// on a host with 3,000 accounts is about 20 MB, so 256 MiB leaves more than ten times
	// that, and one file never holds more than one host's config.
	MaxConfigFile = 256 << 20
	// MaxSmallFile bounds paths.conf and the other small cPanel files, a few hundred bytes
	// of key=value lines in practice: 1 MiB.
	MaxSmallFile = 1 << 20
	// MaxCertFile bounds a certificate file: a combined cert+key+bundle is a few KB, a long
	// chain a few tens of KB, so 1 MiB.
	MaxCertFile = 1 << 20
)

var (
	// ErrNotRegular: the path names a FIFO, device, directory, socket or other non-regular
	// file. Reading one can block forever (a FIFO without a writer) or never end (/dev/zero).
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: the file is over the caller's size cap.
	ErrTooLarge = errors.New("over the size limit")
)

// openFlags: O_NONBLOCK makes open(2) of a FIFO return at once instead of waiting, without
// end and deaf to SIGTERM, for a writer (fifo(7)); O_NOCTTY keeps a terminal device from
// becoming our controlling terminal; O_CLOEXEC keeps the descriptor out of the commands we
// run (os.OpenFile adds it anyway; it is spelled out because it is part of the rule).
// Symlinks are followed: cPanel's own paths are symlinked (/etc/apache2/logs ->
// ../../var/log/apache2), and the type check below is on what the link reaches.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOCTTY | syscall.O_CLOEXEC

// OpenRegular opens path for reading, positioned at 0, and returns it with its fstat
// information, or an error wrapping ErrNotRegular (naming the file and what it is) when the
// path reaches anything but a regular file. It sets no size cap, for streaming readers: an
// error_log may legitimately be gigabytes. A missing file's error is the *fs.PathError from
// open, so errors.Is(err, fs.ErrNotExist) holds.
//
// O_NONBLOCK stays set on the returned file. Clearing it is unnecessary: Linux ignores it for
// regular files on disk filesystems, so reads behave as after os.Open. Keeping it is
// safer: the kernel pseudo-files that are typed regular yet wait for data (/proc/kmsg,
// tracefs's trace_pipe) then fail with EAGAIN instead of blocking.
func OpenRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, openFlags, 0)
	if err != nil {
		return nil, nil, err
	}
	// fstat the descriptor, not the path: the path may be swapped between a stat and the open.
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err // an *fs.PathError naming the file
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is %s, %w", path, fileKind(info.Mode()), ErrNotRegular)
	}
	return f, info, nil
}

// ReadFile reads a regular file of at most limit bytes, the bounded replacement for
// os.ReadFile. The file is opened as OpenRegular does, so a FIFO, a device or a directory is
// refused at once. A file whose fstat size is over limit is refused before reading; and
// since a file can grow between the fstat and the read (or report size 0, as /proc files
// do), at most limit+1 bytes are read, and reaching limit+1 is refused too. Errors name the
// file; over-size errors wrap ErrTooLarge.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, info, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size := info.Size(); size > limit {
		return nil, fmt.Errorf("%s is %s, %w of %s", path, sizeString(size), ErrTooLarge, sizeString(limit))
	}
	// Room for the whole file plus the one byte that tells us it grew, as os.ReadFile sizes
	// its buffer from fstat.
	data := make([]byte, 0, max(info.Size(), 511)+1)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		want := min(int64(cap(data)), limit+1)
		n, err := f.Read(data[len(data):want])
		data = data[:len(data)+n]
		if int64(len(data)) > limit {
			return nil, fmt.Errorf("%s grew past %s while being read, %w", path, sizeString(limit), ErrTooLarge)
		}
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err // an *fs.PathError naming the file
		}
	}
}

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

// sizeString prints a byte count for people: "3.2 GiB", "1 MiB", "700 B".
func sizeString(n int64) string {
	for _, u := range []struct {
		shift int
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift {
			v := float64(n) / float64(int64(1)<<u.shift)
			if n%(1<<u.shift) == 0 {
				return fmt.Sprintf("%.0f %s", v, u.name)
			}
			return fmt.Sprintf("%.1f %s", v, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}
