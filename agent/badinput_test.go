package agent

import (
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
