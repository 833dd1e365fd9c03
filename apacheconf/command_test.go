package apacheconf

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExecRunnerKeepsOutputAndCause(t *testing.T) {
	out, err := ExecRunner{Timeout: 10 * time.Second}.Run(context.Background(), []string{"sh", "-c", "echo to-stdout; echo AH00526: Syntax error >&2; exit 3"})
	var ce *CmdError
	var ee *exec.ExitError
	if !errors.As(err, &ce) || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(string(out), "to-stdout") || !strings.Contains(err.Error(), "AH00526: Syntax error") || !strings.HasPrefix(err.Error(), "sh -c ") {
		t.Fatalf("out %q, err %q", out, err)
	}
	if _, err := (ExecRunner{}).Run(context.Background(), nil); err == nil {
		t.Fatal("an empty command ran")
	}
}

// A restart script that hangs is killed at the timeout with everything it started (its
// process group), and the error stays a timeout for errors.Is.
func TestExecRunnerTimeoutKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	start := time.Now()
	_, err := ExecRunner{Timeout: 300 * time.Millisecond}.Run(context.Background(),
		[]string{"sh", "-c", "sleep 60 & echo $! >" + pidFile + "; wait"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %s: the child's pipes held the runner", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
			break // killed, waiting to be reaped by its new parent
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// On a real host with systemd as PID 1, restart and rebuild run through PID 1 (Apache must not
// inherit our sandbox or cgroup); the config test runs directly. Under another --root, never.
func TestDefaultCommandsThroughPID1(t *testing.T) {
	l := &Layout{Root: "/", Kind: KindEA4, Apachectl: "/usr/sbin/apachectl", Restart: restartPrimary, Rebuild: rebuildScript}
	c := l.defaultCommands(true)
	want := Commands{
		ConfigTest: []string{"/usr/sbin/apachectl", "-t"},
		Restart:    []string{"systemd-run", "--wait", "--collect", "--quiet", "--pipe", "--", "/usr/local/cpanel/scripts/restartsrv_httpd"},
		Rebuild:    []string{"systemd-run", "--wait", "--collect", "--quiet", "--pipe", "--", "/usr/local/cpanel/scripts/rebuildhttpdconf"},
	}
	if strings.Join(c.ConfigTest, " ") != strings.Join(want.ConfigTest, " ") || strings.Join(c.Restart, " ") != strings.Join(want.Restart, " ") ||
		strings.Join(c.Rebuild, " ") != strings.Join(want.Rebuild, " ") {
		t.Fatalf("booted: %+v", c)
	}
	if c := l.defaultCommands(false); c.Restart[0] != restartPrimary || c.Rebuild[0] != rebuildScript {
		t.Fatalf("not booted: %+v", c)
	}
	l.Root = t.TempDir()
	if c := l.defaultCommands(true); c.Restart[0] != filepath.Join(l.Root, restartPrimary) {
		t.Fatalf("under --root: %+v", c)
	}
	l.Rebuild = ""
	if c := (&Layout{Root: "/", Kind: KindEA3, Apachectl: "/a", Restart: restartFallback}).defaultCommands(true); len(c.Rebuild) != 0 {
		t.Fatalf("EA3 has no rebuild: %+v", c)
	}
}

// RunLines hands stdout over line by line, keeps stderr for the error, refuses a line longer
// than maxDumpLine (killing the command), and times out like Run.
func TestExecRunnerRunLines(t *testing.T) {
	var got []string
	err := ExecRunner{Timeout: 10 * time.Second}.RunLines(context.Background(),
		[]string{"sh", "-c", "printf 'a\\nb b\\n'; echo warn >&2; printf c"}, func(l []byte) { got = append(got, string(l)) })
	if err != nil || strings.Join(got, "|") != "a|b b|c" {
		t.Fatalf("lines %q, err %v", got, err)
	}
	err = ExecRunner{}.RunLines(context.Background(), []string{"sh", "-c", "echo AH00526: Syntax error >&2; exit 1"}, func([]byte) {})
	var ce *CmdError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "AH00526") {
		t.Fatalf("err = %v", err)
	}
	n := 0
	err = ExecRunner{}.RunLines(context.Background(), []string{"sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' x; echo; sleep 60"}, func([]byte) { n++ })
	if err == nil || n != 0 || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("over-long line: %d lines, err %v", n, err)
	}
	start := time.Now()
	err = ExecRunner{Timeout: 300 * time.Millisecond}.RunLines(context.Background(), []string{"sh", "-c", "echo x; sleep 60"}, func([]byte) {})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("err = %v after %s", err, time.Since(start))
	}
}
