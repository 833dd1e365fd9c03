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
// inherit our sandbox or cgroup): with systemd-run where it has --wait/--pipe/--collect, else
// with the package's oneshot units (EL7's systemd 219); the config test runs directly. Under
// another --root, never.
func TestDefaultCommandsThroughPID1(t *testing.T) {
	l := &Layout{Root: "/", Kind: KindEA4, Apachectl: "/usr/sbin/apachectl", Restart: restartPrimary, Rebuild: rebuildScript}
	for _, tc := range []struct {
		way                          Through
		configTest, restart, rebuild string
	}{
		{ThroughSystemdRun, "/usr/sbin/apachectl -t",
			"systemd-run --wait --collect --quiet --pipe -- /usr/local/cpanel/scripts/restartsrv_httpd",
			"systemd-run --wait --collect --quiet --pipe -- /usr/local/cpanel/scripts/rebuildhttpdconf"},
		{ThroughUnit, "/usr/sbin/apachectl -t", "systemctl start stapling-agent-restart.service", "systemctl start stapling-agent-rebuild.service"},
		{ThroughNothing, "/usr/sbin/apachectl -t", restartPrimary, rebuildScript},
	} {
		t.Run(string(tc.way), func(t *testing.T) {
			c := l.defaultCommands(tc.way)
			if got := [3]string{strings.Join(c.ConfigTest, " "), strings.Join(c.Restart, " "), strings.Join(c.Rebuild, " ")}; got != [3]string{tc.configTest, tc.restart, tc.rebuild} {
				t.Fatalf("got %q", got)
			}
		})
	}
	// A command the package has no unit for runs directly on the oneshot path.
	if c := (&Layout{Root: "/", Kind: KindEA3, Apachectl: "/a", Restart: restartFallback}).defaultCommands(ThroughUnit); c.Restart[0] != restartFallback || len(c.Rebuild) != 0 {
		t.Fatalf("EA3 through the units: %+v", c)
	}
	root := *l
	root.Root = t.TempDir()
	for _, way := range []Through{ThroughSystemdRun, ThroughUnit} {
		if c := root.defaultCommands(way); c.Restart[0] != filepath.Join(root.Root, restartPrimary) {
			t.Fatalf("under --root (%s): %+v", way, c)
		}
	}
	if c := (&Layout{Root: "/", Kind: KindEA3, Apachectl: "/a", Restart: restartFallback}).defaultCommands(ThroughSystemdRun); len(c.Rebuild) != 0 {
		t.Fatalf("EA3 has no rebuild: %+v", c)
	}
}

func TestParseSystemdVersion(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want int
	}{
		{"systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT +SELINUX\n", 252},
		{"systemd 219\n+PAM +AUDIT +SELINUX +IMA -APPARMOR\n", 219},
		{"systemd 239 (239-82.el8)\n", 239},
		{"", -1},
		{"systemd-run: unrecognized option\n", -1},
	} {
		v, err := parseSystemdVersion([]byte(tc.out))
		if (tc.want < 0) != (err != nil) || (err == nil && v != tc.want) {
			t.Errorf("%q: %d, %v; want %d", tc.out, v, err, tc.want)
		}
	}
}

// A oneshot started with `systemctl start` logs to the journal, not to us: a failed start
// brings the unit's journal lines into the error (here a fake systemctl and journalctl).
func TestUnitStartErrorCarriesTheUnitLog(t *testing.T) {
	bin := t.TempDir()
	write := func(name, script string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("systemctl", `echo "Job for $2 failed because the control process exited with error code." >&2; exit 1`+"\n")
	write("journalctl", `echo "httpd has failed, please check the logs: /etc/apache2/logs/error_log ($*)"`+"\n")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	_, err := ExecRunner{Timeout: 10 * time.Second}.Run(context.Background(), ViaUnit("stapling-agent-restart.service"))
	var ce *CmdError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"systemctl start stapling-agent-restart.service: exit status 1: Job for", "stapling-agent-restart.service logged:", "httpd has failed", "_SYSTEMD_UNIT=stapling-agent-restart.service --since"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
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
