package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
)

// asNobody runs the agent as an unprivileged user when the test runs as root, so that a file
// made unreadable is really unreadable (root reads anything). Callers open the tree's 0700
// temp directories to it first.
func asNobody(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	return runCmd(t, cmd)
}

// oneLineError: the last stderr line is the one error line, and there is only one.
func oneLineError(t *testing.T, r result, want string) {
	t.Helper()
	if strings.Count(r.stderr, "stapling-agent: error: ") != 1 || !strings.Contains(lastLine(r.stderr), want) ||
		!strings.HasPrefix(lastLine(r.stderr), "stapling-agent: error: ") {
		t.Fatalf("want one error line containing %q, got:\n%s", want, r.stderr)
	}
}

// Bad input for remediate: a clear one-line error, a defined exit code, no change on disk.
func TestBadInputRemediate(t *testing.T) {
	inc := ea4Include
	cases := []struct {
		name   string
		setup  func(root string)
		args   []string
		code   int
		want   string
		nobody bool
	}{
		{name: "include is a directory", setup: func(r string) { os.Remove(filepath.Join(r, inc)); os.Mkdir(filepath.Join(r, inc), 0o755) },
			code: 2, want: "is a directory"},
		{name: "include is a dangling symlink", setup: func(r string) {
			os.Remove(filepath.Join(r, inc))
			os.Symlink("/nonexistent", filepath.Join(r, inc))
		}, code: 2, want: "symlink"},
		{name: "include is binary garbage", setup: func(r string) { os.WriteFile(filepath.Join(r, inc), []byte("\x00\x01\xff\xfe garbage"), 0o644) },
			code: 2, want: "NUL bytes"},
		{name: "include unreadable", setup: func(r string) { os.Chmod(filepath.Join(r, inc), 0o600) },
			args: []string{"--dry-run"}, code: 2, want: "permission denied", nobody: true},
		{name: "httpd.conf missing", setup: func(r string) { os.Remove(filepath.Join(r, ea4HTTPD)) },
			code: 2, want: "httpd.conf"},
		{name: "include cycle", setup: func(r string) {
			os.WriteFile(filepath.Join(r, ea4HTTPD), []byte("Include /etc/apache2/conf/httpd.conf\n"), 0o644)
		}, code: 2, want: "include cycle"},
		{name: "no layout", setup: func(r string) { os.Remove(filepath.Join(r, "etc/cpanel/ea4/is_ea4")) },
			code: 2, want: "no cPanel Apache layout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := cliHost(t)
			c.setup(root)
			before := fakehost.SnapshotTree(t, root)
			args := append([]string{"--root", root, "remediate"}, c.args...)
			var r result
			if c.nobody {
				for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
					os.Chmod(d, 0o755)
				}
				before = fakehost.SnapshotTree(t, root)
				r = asNobody(t, args...)
			} else {
				r = runAgent(t, nil, args...)
			}
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
			}
			oneLineError(t, r, c.want)
			if after := fakehost.SnapshotTree(t, root); after != before {
				t.Fatal("something changed on disk")
			}
			if standins(t, root) != "" {
				t.Fatal("a command ran")
			}
		})
	}
}

// Valid but unusual includes work and keep every byte.
func TestUnusualIncludesKeepBytes(t *testing.T) {
	big := strings.Repeat("# a long admin include line, kept byte for byte\r\n", 10<<20/50)
	for name, content := range map[string]string{
		"crlf":             "KeepAlive On\r\nTimeout 30\r\n",
		"no final newline": "KeepAlive On\nTimeout 30",
		"10 MB":            big,
	} {
		t.Run(name, func(t *testing.T) {
			root := cliHost(t)
			p := filepath.Join(root, ea4Include)
			os.WriteFile(p, []byte(content), 0o644)
			if r := runAgent(t, nil, "--root", root, "remediate"); r.code != 0 {
				t.Fatalf("remediate: %+v", r)
			}
			got, _ := os.ReadFile(p)
			if !strings.HasPrefix(string(got), content) || len(got) > len(content)+300 {
				t.Fatal("admin bytes not kept")
			}
			if r := runAgent(t, nil, "--root", root, "revert"); r.code != 0 {
				t.Fatalf("revert: %+v", r)
			}
			if got, _ := os.ReadFile(p); string(got) != content {
				t.Fatal("revert did not restore the exact bytes")
			}
		})
	}
}

func TestPathsConfJunkIsNotFatal(t *testing.T) {
	root := cliHost(t)
	os.WriteFile(filepath.Join(root, "etc/cpanel/ea4/paths.conf"),
		[]byte("garbage\n\x00\xff\nfile_conf=/etc/apache2/conf/httpd.conf\n=\nbin_apachectl=relative\n"), 0o644)
	r := runAgent(t, nil, "--root", root, "remediate")
	if r.code != 0 || !strings.Contains(r.stderr, "ignored lines in paths.conf") {
		t.Fatalf("%+v", r)
	}
}

// Bad error_logs for the audit: missing or unreadable is unknown (3); long lines, NUL bytes,
// invalid UTF-8 and disorder are read, counted and survived.
func TestBadInputErrorLog(t *testing.T) {
	setup := func(t *testing.T, content []byte) string {
		root := cliHost(t)
		logDir := filepath.Join(root, "var/log/apache2")
		os.MkdirAll(logDir, 0o755)
		os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
		if content != nil {
			os.WriteFile(filepath.Join(logDir, "error_log"), content, 0o644)
		}
		return root
	}
	t.Run("missing", func(t *testing.T) {
		root := setup(t, nil)
		if r := runAgent(t, nil, "--root", root, "audit"); r.code != 3 || !strings.Contains(r.stdout, "cannot read the error log") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		root := setup(t, []byte("x\n"))
		os.Chmod(filepath.Join(root, "var/log/apache2/error_log"), 0o600)
		for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
		if r := asNobody(t, "--root", root, "audit"); r.code != 3 || !strings.Contains(r.stdout, "permission denied") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("long lines, NUL, invalid UTF-8, disorder", func(t *testing.T) {
		now := time.Now()
		line := func(ago time.Duration, pid int) string {
			return fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n",
				now.Add(-ago).Format("Mon Jan 02 15:04:05.000000 2006"), pid)
		}
		content := line(3*time.Minute, 1) + strings.Repeat("A", 1<<20) + "\n" + "\x00\x00\xff\xfe\xc3\x28 junk\n" +
			line(time.Minute, 2) + line(2*time.Minute, 3) + "[" + strings.Repeat("\xff", 40) + "] [ssl:error]\n"
		root := setup(t, []byte(content))
		r := runAgent(t, nil, "--root", root, "audit", "--format", "json")
		if r.code != 2 || !strings.Contains(r.stdout, `"total": 3`) || !strings.Contains(r.stdout, `"skipped_lines": 1`) {
			t.Fatalf("%+v", r)
		}
	})
}

// Every read is bounded and cancellable: an error_log a tenant made huge (here 64 GB, sparse:
// no line ends, nothing to parse) stops the audit within 2 s of SIGTERM, and within its
// --timeout, with status unknown (exit 3) and a clear word; a FIFO in place of the error_log or
// of a certificate is refused at once.
func TestAuditStopsOnSignalAndTimeout(t *testing.T) {
	root := cliHost(t)
	logDir := filepath.Join(root, "var/log/apache2")
	os.MkdirAll(logDir, 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	if err := os.Truncate(filepath.Join(logDir, "error_log"), 0); err != nil {
		f, _ := os.Create(filepath.Join(logDir, "error_log"))
		f.Close()
	}
	if err := os.Truncate(filepath.Join(logDir, "error_log"), 64<<30); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(agentBin, "--root", root, "audit", "--format", "json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // well into the scan
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(out.String(), "stopped (signal)") {
			t.Fatalf("after SIGTERM: %v\n%s%s", err, out.String(), errb.String())
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %s after SIGTERM", d)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("audit ignored SIGTERM")
	}

	start = time.Now()
	r := runAgent(t, nil, "--root", root, "audit", "--timeout", "500ms", "--format", "nagios")
	if r.code != 3 || !strings.HasPrefix(r.stdout, "STAPLING UNKNOWN - the audit ran out of time (--timeout)") || time.Since(start) > 3*time.Second {
		t.Fatalf("--timeout: %+v after %s", r, time.Since(start))
	}

	os.Remove(filepath.Join(logDir, "error_log"))
	if err := syscall.Mkfifo(filepath.Join(logDir, "error_log"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runAgent(t, nil, "--root", root, "audit", "--format", "nagios")
	if r.code != 3 || !strings.Contains(r.stdout, "named pipe (FIFO), not a regular file") {
		t.Fatalf("FIFO error_log: %+v", r)
	}
	os.Remove(filepath.Join(logDir, "error_log"))
	os.WriteFile(filepath.Join(logDir, "error_log"), nil, 0o644)
	os.Remove(filepath.Join(root, fakehost.CertFile))
	if err := syscall.Mkfifo(filepath.Join(root, fakehost.CertFile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"audit"}, {"remediate", "--dry-run"}, {"probe"}} {
		start := time.Now()
		r := runAgent(t, nil, append([]string{"--root", root}, args...)...)
		if time.Since(start) > 5*time.Second || r.code == -1 {
			t.Fatalf("%v with a FIFO certificate: %+v after %s", args, r, time.Since(start))
		}
	}
}

// Root acts only through what only root could have written: a --root tree owned by another
// user (a sudo rule that does not pin the arguments lets a user point --root at their own tree
// with their own "apachectl"), a group-writable command, a state directory or an --output
// directory that is a symlink: each is refused with a clear word, nothing runs, nothing is
// written through the link.
func TestPrivilegeRefusals(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the checks apply when the agent runs as root")
	}
	nobody := func(t *testing.T, root string) {
		t.Helper()
		if out, err := exec.Command("chown", "-R", "nobody", root).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	t.Run("tree owned by another user", func(t *testing.T) {
		root := cliHost(t)
		nobody(t, root)
		for _, args := range [][]string{{"remediate"}, {"revert"}, {"run"}} {
			r := runAgent(t, nil, append([]string{"--root", root}, args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, "owned by uid") || standins(t, root) != "" {
				t.Fatalf("%v: %+v; ran %q", args, r, standins(t, root))
			}
		}
		// Reading is still allowed: the audit runs nothing.
		if r := runAgent(t, nil, "--root", root, "remediate", "--dry-run"); r.code != 0 {
			t.Fatalf("dry run: %+v", r)
		}
	})
	t.Run("group-writable command", func(t *testing.T) {
		root := cliHost(t)
		os.Chmod(filepath.Join(root, "usr/local/cpanel/scripts/restartsrv_httpd"), 0o775)
		r := runAgent(t, nil, "--root", root, "remediate")
		if r.code != 2 || !strings.Contains(r.stderr, "writable by group or others") || standins(t, root) != "" || !strings.Contains(readFile(t, filepath.Join(root, ea4Include)), "KeepAliveTimeout 5") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("state directory is a symlink", func(t *testing.T) {
		root := cliHost(t)
		elsewhere := t.TempDir()
		os.MkdirAll(filepath.Join(root, "var/lib"), 0o755)
		os.Symlink(elsewhere, filepath.Join(root, "var/lib/stapling-agent"))
		r := runAgent(t, nil, "--root", root, "remediate")
		if r.code == 0 || !strings.Contains(r.stderr, "is a symlink") || standins(t, root) != "" {
			t.Fatalf("%+v", r)
		}
		if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
			t.Fatalf("wrote through the link: %v", entries)
		}
	})
	t.Run("output directory is a symlink", func(t *testing.T) {
		root := cliHost(t)
		elsewhere, dir := t.TempDir(), t.TempDir()
		os.Symlink(elsewhere, filepath.Join(dir, "textfile"))
		r := runAgent(t, nil, "--root", root, "audit", "--format", "prometheus", "--output", filepath.Join(dir, "textfile", "x.prom"))
		if r.code != 3 || !strings.Contains(r.stderr, "is a symlink") {
			t.Fatalf("%+v", r)
		}
		if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
			t.Fatalf("wrote through the link: %v", entries)
		}
	})
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, _ := os.ReadFile(p)
	return string(b)
}
