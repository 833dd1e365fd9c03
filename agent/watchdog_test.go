package agent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notifySocket is a systemd notify socket: it records each datagram with its arrival time.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
	at   []time.Time
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			for _, m := range strings.Split(strings.TrimSpace(string(buf[:k])), "\n") {
				n.msgs, n.at = append(n.msgs, m), append(n.at, time.Now())
			}
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) has(msg string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

// Under the shipped unit's terms, scaled down: WatchdogSec 2 s and a restart that takes 5 s.
// The daemon, run as systemd runs it (NOTIFY_SOCKET, WATCHDOG_USEC), keeps pinging through
// the whole remediation; no two pings are ever more than half the watchdog interval apart, so
// systemd never kills it in the middle of an Apache restart. READY=1 comes before any
// remediation is finished, and STOPPING=1 at the end.
func TestCLIWatchdogDuringSlowRestart(t *testing.T) {
	root := cliHost(t)
	logDir := filepath.Join(root, "var/log/apache2")
	os.MkdirAll(logDir, 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	os.WriteFile(filepath.Join(logDir, "error_log"), nil, 0o644)
	os.WriteFile(filepath.Join(root, "usr/local/cpanel/scripts/restartsrv_httpd"),
		[]byte(fmt.Sprintf("#!/bin/sh\necho restart-begin >>%q/standins.log\nsleep 5\necho restart-end >>%q/standins.log\n", root, root)), 0o755)
	n := listenNotify(t)
	const watchdog = 2 * time.Second

	cmd := exec.Command(agentBin, "--root", root, "run")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()))
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(t, "READY=1", func() bool { return n.has("READY=1") })

	w, _ := os.OpenFile(filepath.Join(logDir, "error_log"), os.O_WRONLY|os.O_APPEND, 0o644)
	defer w.Close()
	ts := time.Now().Format("Mon Jan 02 15:04:05.000000 2006")
	for i := 0; i < 3; i++ {
		fmt.Fprintf(w, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", ts, 70+i)
	}
	waitFor(t, "the slow restart to begin", func() bool { return strings.Contains(standins(t, root), "restart-begin") })
	begin := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(standins(t, root), "restart-end") || !strings.Contains(stderr.String(), `"decision":"remediate"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the remediation did not finish:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
	waitFor(t, "STOPPING=1", func() bool { return n.has("STOPPING=1") })

	n.mu.Lock()
	defer n.mu.Unlock()
	var pings []time.Time
	for i, m := range n.msgs {
		if m == "WATCHDOG=1" {
			pings = append(pings, n.at[i])
		}
	}
	during := 0
	for i, p := range pings {
		if p.After(begin) && p.Before(begin.Add(5*time.Second)) {
			during++
		}
		if i > 0 {
			if gap := p.Sub(pings[i-1]); gap > watchdog/2 {
				t.Fatalf("no ping for %s (more than half of WatchdogSec %s) at %s", gap, watchdog, p.Format(time.RFC3339Nano))
			}
		}
	}
	if during < 5 {
		t.Fatalf("only %d pings during the 5 s restart", during)
	}
}

// A remediation that the start-up replay begins runs in the worker: READY=1 is sent while it
// is still under way, so a slow restart never runs into the unit's TimeoutStartSec.
func TestCLIReadyNotHeldBackByReplay(t *testing.T) {
	root := cliHost(t)
	logDir := filepath.Join(root, "var/log/apache2")
	os.MkdirAll(logDir, 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	ts := time.Now().Add(-time.Minute).Format("Mon Jan 02 15:04:05.000000 2006")
	var prelog strings.Builder
	for i := 0; i < 3; i++ {
		fmt.Fprintf(&prelog, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", ts, 70+i)
	}
	os.WriteFile(filepath.Join(logDir, "error_log"), []byte(prelog.String()), 0o644)
	os.WriteFile(filepath.Join(root, "usr/local/cpanel/scripts/restartsrv_httpd"),
		[]byte(fmt.Sprintf("#!/bin/sh\necho restart-begin >>%q/standins.log\nsleep 3\necho restart-end >>%q/standins.log\n", root, root)), 0o755)
	n := listenNotify(t)
	cmd := exec.Command(agentBin, "--root", root, "run")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(t, "READY=1", func() bool { return n.has("READY=1") })
	if strings.Contains(standins(t, root), "restart-end") {
		t.Fatal("READY=1 waited for the replay's remediation")
	}
	waitFor(t, "the replay's remediation", func() bool { return strings.Contains(stderr.String(), `"decision":"remediate"`) })
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}
