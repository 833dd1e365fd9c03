package frontend

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
)

const procNetHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

// WriteFakeListener describes, under a fake host's root, process pid running exe (a host
// path, "/usr/sbin/nginx") and listening on 0.0.0.0:port, in the shape the package comment
// gives: a LISTEN line in ROOT/proc/net/tcp, ROOT/proc/PID/fd/N -> socket:[INODE],
// ROOT/proc/PID/exe -> exe and ROOT/proc/PID/comm. Call it once per socket; a process may
// own several. It is for tests and fake hosts only.
func WriteFakeListener(root string, pid, port int, exe string) error {
	tcp := filepath.Join(root, "proc", "net", "tcp")
	dir := filepath.Join(root, "proc", strconv.Itoa(pid))
	if err := os.MkdirAll(filepath.Dir(tcp), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
		return err
	}
	old, err := os.ReadFile(tcp)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if len(old) == 0 {
		old = []byte(procNetHeader)
	}
	n := bytes.Count(old, []byte("\n")) - 1 // sockets already described
	inode := 40000 + n
	line := fmt.Sprintf("%4d: 00000000:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n", n, port, inode)
	if err := os.WriteFile(tcp, append(old, line...), 0o644); err != nil {
		return err
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return err
	}
	if err := os.Symlink(fmt.Sprintf("socket:[%d]", inode), filepath.Join(dir, "fd", strconv.Itoa(3+len(fds)))); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(dir, "exe")); os.IsNotExist(err) {
		if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
			return err
		}
		comm := path.Base(exe)
		if len(comm) > 15 { // TASK_COMM_LEN - 1
			comm = comm[:15]
		}
		return os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644)
	}
	return nil
}
