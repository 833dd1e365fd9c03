package whm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// The EA4 post-transaction hook (packaging/hooks/900-stapling-agent-check) is a shell script
// shipped in the package; these tests run the real script with the real agent binary over fake
// EA4 trees, with stand-ins on PATH for the journal (a recording systemd-cat or logger) and
// with a stand-in apachectl in the tree, where the script resolves it as the agent does.

const hookScript = "../../packaging/hooks/900-stapling-agent-check"

// buildAgent builds the CLI into dir.
func buildAgent(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "stapling-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/stapling-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// hookEnv is one run's tools: a bin directory holding only the commands the script may use
// (the real coreutils, grep and sed it needs, plus the stand-ins a case asks for) and a record
// file outside the host tree.
type hookEnv struct {
	bin    string
	record string
}

func newHookEnv(t *testing.T, standins ...string) *hookEnv {
	t.Helper()
	dir := t.TempDir()
	h := &hookEnv{bin: filepath.Join(dir, "bin"), record: filepath.Join(dir, "record")}
	if err := os.Mkdir(h.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"tr", "cut", "sed", "grep", "head", "tail", "mktemp", "timeout", "rm", "cat"} {
		real, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(real, filepath.Join(h.bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range standins {
		var script string
		switch s {
		case "systemd-cat": // records its arguments and the message on stdin
			script = "#!/bin/sh\n{ printf 'systemd-cat %s: ' \"$*\"; cat; } >>'" + h.record + "'\n"
		case "systemd-cat-broken": // installed but no journal to talk to, as in a container
			s, script = "systemd-cat", "#!/bin/sh\necho 'Failed to create stream fd: No such file or directory' >&2\nexit 1\n"
		case "logger":
			script = "#!/bin/sh\nprintf 'logger %s\\n' \"$*\" >>'" + h.record + "'\n"
		}
		if err := os.WriteFile(filepath.Join(h.bin, s), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// run runs the hook as the universal-hooks plugin does (with --pkg_list) and returns its
// exit code, stdout and stderr.
func (h *hookEnv) run(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{hookScript}, args...)...)
	cmd.Env = append([]string{"PATH=" + h.bin, "TMPDIR=" + os.TempDir(), "HOME=" + t.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func (h *hookEnv) recorded(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(h.record)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// The apachectl stand-ins, at EA4's default bin_apachectl under the root. They record their
// arguments outside the tree, so that the tree can be compared before and after.
func apachectl(record string, ok bool) string {
	if ok {
		return "#!/bin/sh\necho \"apachectl $*\" >>'" + record + "'\necho 'Syntax OK'\n"
	}
	return "#!/bin/sh\necho \"apachectl $*\" >>'" + record + "'\n" +
		"printf 'AH00526: Syntax error on line 3 of /etc/apache2/conf.d/ea-update.conf:\\n\\033[31mInvalid command \\047Foo\\047\\n' >&2\nexit 1\n"
}

// withBlock is the include holding the admin's bytes and our block, as a remediation leaves it.
func withBlock(t *testing.T) string {
	t.Helper()
	b, changed := apacheconf.ApplyBlock([]byte(fakehost.AdminBytes))
	if !changed {
		t.Fatal("ApplyBlock changed nothing")
	}
	return string(b)
}

// remediated journals a completed remediation of the include, as the agent does.
func remediated(t *testing.T, root string, at time.Time) {
	t.Helper()
	st := &state.State{Dir: filepath.Join(root, "var/lib/stapling-agent"), Now: time.Now, Root: root}
	if err := st.Ensure(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []state.Step{state.Intent, state.Written, state.Done} {
		if err := st.Append(state.Entry{Time: at, Run: "r1", Action: state.Remediate, Step: step, File: fakehost.EA4Include, Result: state.OK}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	bin := buildAgent(t, t.TempDir())
	remediatedAt := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	const unwiredHTTPD = fakehost.LoadModules + "SSLUseStapling On\nSSLStaplingCache shmcb:/run/apache2/stapling(256000)\n" +
		"<VirtualHost *:443>\nServerName a.example\nSSLEngine on\nSSLCertificateFile " + fakehost.CertFile + "\n</VirtualHost>\n"

	for _, tc := range []struct {
		name       string
		httpd      string // "" is fakehost.WiredHTTPD
		include    func(t *testing.T) string
		journal    bool // a completed remediation is journaled
		configOK   bool
		noCtl      bool              // no apachectl in the tree
		fifoHTTPD  bool              // httpd.conf is a FIFO: the agent refuses to read it
		extra      map[string]string // more host files
		standins   []string
		env        []string
		prio       string // priority logged
		want       []string
		wantStdout string // on stdout (the transaction's output)
		wantStderr string
	}{
		{
			name: "include intact", include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "info",
			want: []string{"after an EasyApache 4 transaction of 4 package(s) (ea-apache24, ea-apache24-mod_ssl, ea-php82, ...): " +
				"stapling-agent's block in " + fakehost.EA4Include + " is intact and wired into " + fakehost.EA4HTTPD + "; stapling is off; /usr/sbin/apachectl -t passed"},
			wantStdout: "stapling-agent (info): after an EasyApache 4 transaction",
		},
		{
			name:    "mixed: a vhost turns stapling back on",
			httpd:   fakehost.WiredHTTPD + "<VirtualHost *:443>\nServerName b.example\nSSLEngine on\nSSLUseStapling on\n</VirtualHost>\n",
			include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "warning",
			want: []string{"is intact and wired, but some SSL vhosts turn stapling back on (stapling mixed)"},
		},
		{
			name: "mixed only through our Must-Staple exemption",
			httpd: fakehost.WiredHTTPD + "<VirtualHost *:443>\nServerName ms.example\nSSLEngine on\n" +
				"IncludeOptional \"/etc/apache2/conf.d/userdata/ssl/2_4/u/ms.example/*.conf\"\n</VirtualHost>\n",
			extra:   map[string]string{"/etc/apache2/conf.d/userdata/ssl/2_4/u/ms.example/stapling-agent-must-staple.conf": "SSLUseStapling on\n"},
			include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "info",
			want: []string{"stapling is kept on only for Must-Staple vhosts by stapling-agent's exemption"},
		},
		{
			name: "block removed by an update", include: func(*testing.T) string { return fakehost.AdminBytes }, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "err",
			want: []string{"stapling-agent's block is gone from " + fakehost.EA4Include + " (our last completed change of it was a remediation at 2026-03-04T05:06:07Z); stapling is on;",
				"; /usr/sbin/apachectl -t passed"},
		},
		{
			name: "include unwired", httpd: unwiredHTTPD, include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "err",
			want: []string{"stapling-agent's block in " + fakehost.EA4Include + " is not read: " + fakehost.EA4HTTPD + " no longer includes that file, so stapling is on; run /usr/local/cpanel/scripts/rebuildhttpdconf"},
		},
		{
			name:  "template now sets stapling on after the include",
			httpd: fakehost.WiredHTTPD + "SSLUseStapling On\n", include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "err",
			want: []string{"is intact and wired but no longer wins: stapling is on (last global SSLUseStapling at " + fakehost.EA4HTTPD + ":"},
		},
		{
			name: "config test failing", include: withBlock, journal: true, configOK: false, standins: []string{"systemd-cat"},
			prio: "err",
			// The first line only, control characters removed.
			want: []string{"is intact and wired into " + fakehost.EA4HTTPD + "; stapling is off; /usr/sbin/apachectl -t FAILED (exit 1): AH00526: Syntax error on line 3 of /etc/apache2/conf.d/ea-update.conf:\n"},
		},
		{
			name: "no block and none expected", include: func(*testing.T) string { return fakehost.AdminBytes }, configOK: true, standins: []string{"systemd-cat"},
			prio: "info",
			want: []string{"no stapling-agent block in " + fakehost.EA4Include + ", and none expected; stapling is on; /usr/sbin/apachectl -t passed"},
		},
		{
			name: "config unreadable", fifoHTTPD: true, include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat"},
			prio: "warning",
			want: []string{"could not read the Apache configuration, so stapling-agent's block in " + fakehost.EA4Include + " and its wiring were not checked; see stapling-agent audit; /usr/sbin/apachectl -t passed"},
		},
		{
			name: "apachectl missing", include: withBlock, journal: true, noCtl: true, standins: []string{"systemd-cat"},
			prio: "warning",
			want: []string{"stapling is off; config test not run: /usr/sbin/apachectl is missing"},
		},
		{
			name: "dry run logs nothing", include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat", "logger"},
			env:        []string{"DRY_RUN=1"},
			wantStdout: "dry-run: would log to the journal as stapling-agent-ea4-hook, priority info: after an EasyApache 4 transaction of 4 package(s)",
		},
		{
			name: "no journal: logger", include: withBlock, journal: true, configOK: true, standins: []string{"systemd-cat-broken", "logger"},
			want: []string{"logger -t stapling-agent-ea4-hook -p user.info -- after an EasyApache 4 transaction of 4 package(s)"},
		},
		{
			name: "neither systemd-cat nor logger: stderr", include: withBlock, journal: true, configOK: true,
			wantStderr: "stapling-agent-ea4-hook: info: after an EasyApache 4 transaction of 4 package(s)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			httpd := tc.httpd
			if httpd == "" {
				httpd = fakehost.WiredHTTPD
			}
			host := fakehost.New(t, "ea4", map[string]string{
				fakehost.EA4HTTPD:   httpd,
				fakehost.EA4Include: tc.include(t),
				fakehost.EA4Log:     "",
			})
			for p, c := range tc.extra {
				fakehost.Write(t, host.Root, p, c)
			}
			if tc.journal {
				remediated(t, host.Root, remediatedAt)
			}
			if tc.fifoHTTPD {
				p := filepath.Join(host.Root, fakehost.EA4HTTPD)
				os.Remove(p)
				if err := syscall.Mkfifo(p, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			h := newHookEnv(t, tc.standins...)
			if !tc.noCtl {
				fakehost.Write(t, host.Root, "/usr/sbin/apachectl", apachectl(h.record+".apachectl", tc.configOK))
				os.Chmod(filepath.Join(host.Root, "usr/sbin/apachectl"), 0o755)
			}
			pkgs := filepath.Join(t.TempDir(), "pkg_list")
			os.WriteFile(pkgs, []byte("ea-apache24\nea-apache24-mod_ssl\nea-php82\nea-php82-php-fpm\n"), 0o600)

			before := fakehost.SnapshotTree(t, host.Root)
			env := append([]string{"STAPLING_AGENT_ROOT=" + host.Root, "STAPLING_AGENT_BIN=" + bin}, tc.env...)
			code, stdout, stderr := h.run(t, env, "--pkg_list="+pkgs)
			if code != 0 {
				t.Errorf("exit %d: a hook must never fail the transaction", code)
			}
			if after := fakehost.SnapshotTree(t, host.Root); after != before {
				t.Errorf("the hook changed the host tree:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			rec := h.recorded(t)
			if tc.prio != "" && !strings.HasPrefix(rec, "systemd-cat -t stapling-agent-ea4-hook -p "+tc.prio+": ") {
				t.Errorf("want one systemd-cat record at priority %s, got:\n%s", tc.prio, rec)
			}
			for _, w := range tc.want {
				if !strings.Contains(rec, w) {
					t.Errorf("record lacks %q:\n%s", w, rec)
				}
			}
			if tc.wantStdout != "" && !strings.Contains(stdout, tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, stdout)
			}
			if tc.wantStderr != "" && !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
			dryRun := len(tc.env) > 0 && tc.env[0] == "DRY_RUN=1"
			if dryRun && (strings.Contains(rec, "systemd-cat") || strings.Contains(rec, "logger")) {
				t.Errorf("logged in a dry run:\n%s", rec)
			}
			if len(tc.standins) > 0 && tc.standins[0] == "systemd-cat" && strings.Contains(rec, "logger") {
				t.Errorf("logged twice, to the journal and to syslog:\n%s", rec)
			}
			// One message, one line: the journal gets exactly what it should.
			if n := strings.Count(rec, "stapling-agent-ea4-hook"); tc.prio != "" && n != 1 {
				t.Errorf("%d log records:\n%s", n, rec)
			}
			// apachectl ran once, with -t only (the config test is read-only; nothing else is).
			ctl, _ := os.ReadFile(h.record + ".apachectl")
			if want := "apachectl -t\n"; !tc.noCtl && string(ctl) != want {
				t.Errorf("apachectl runs: %q, want %q", ctl, want)
			}
		})
	}

	t.Run("not a cPanel host", func(t *testing.T) {
		h := newHookEnv(t, "systemd-cat")
		root := t.TempDir()
		code, _, _ := h.run(t, []string{"STAPLING_AGENT_BIN=" + bin}, "--root", root)
		rec := h.recorded(t)
		if code != 0 || !strings.HasPrefix(rec, "systemd-cat -t stapling-agent-ea4-hook -p warning: after an EasyApache 4 transaction: not checked: no cPanel Apache layout found") {
			t.Fatalf("exit %d, record:\n%s", code, rec)
		}
	})

	t.Run("agent missing", func(t *testing.T) {
		h := newHookEnv(t, "systemd-cat")
		code, _, _ := h.run(t, []string{"STAPLING_AGENT_ROOT=" + t.TempDir(), "STAPLING_AGENT_BIN=/nonexistent/stapling-agent"})
		rec := h.recorded(t)
		if code != 0 || !strings.Contains(rec, "-p warning: after an EasyApache 4 transaction: not checked: /nonexistent/stapling-agent is missing or not executable") {
			t.Fatalf("exit %d, record:\n%s", code, rec)
		}
	})

	t.Run("hostile package list", func(t *testing.T) {
		h := newHookEnv(t, "systemd-cat")
		pkgs := filepath.Join(t.TempDir(), "pkg_list")
		os.WriteFile(pkgs, []byte("ea-a\x1b[2J;rm -rf /\nea-$(reboot)"+strings.Repeat("x", 200)+"\n\n"), 0o600)
		code, _, _ := h.run(t, []string{"STAPLING_AGENT_ROOT=" + t.TempDir(), "STAPLING_AGENT_BIN=/nonexistent"}, "--pkg_list="+pkgs, "--future-flag")
		rec := h.recorded(t)
		want := "transaction of 2 package(s) (ea-a2Jrm-rf, ea-reboot" + strings.Repeat("x", 55) + "): not checked"
		if code != 0 || !strings.Contains(rec, want) {
			t.Fatalf("exit %d, want %q in record:\n%s", code, want, rec)
		}
	})
}
