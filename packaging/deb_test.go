package packaging

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// builtDeb is the .deb made once for every test (0.1.0-1, amd64), and its files unpacked.
var builtDeb struct {
	deb, extract string
	err          error
	attempts     int
}

func debPackage(t *testing.T) {
	t.Helper()
	need(t, "dpkg-deb")
	if builtDeb.attempts > 0 {
		if builtDeb.err != nil {
			t.Fatal(builtDeb.err)
		}
		return
	}
	builtDeb.attempts++
	dist := filepath.Join(built.dist, "deb")
	os.Mkdir(dist, 0o755)
	cmd := exec.Command("../scripts/package.sh", "deb")
	cmd.Env = append(os.Environ(), "VERSION=0.1.0", "RELEASE=1", "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		builtDeb.err = fmt.Errorf("package.sh deb: %v\n%s", err, out)
		t.Fatal(builtDeb.err)
	}
	builtDeb.deb = filepath.Join(dist, "stapling-agent_0.1.0-1_amd64.deb")
	builtDeb.extract = filepath.Join(dist, "extract")
	run(t, "", nil, "dpkg-deb", "-x", builtDeb.deb, builtDeb.extract)
}

// lintian on the .deb, as a non-root user (as rpmlint: it need not be root, and says so), with
// only the overrides the package ships: no error or warning, no override left unused (a stale
// one would hide the next real finding), and a comment justifying each override.
func TestDebLintian(t *testing.T) {
	debPackage(t)
	need(t, "lintian")
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	deb := filepath.Join(dir, filepath.Base(builtDeb.deb))
	b, _ := os.ReadFile(builtDeb.deb)
	os.WriteFile(deb, b, 0o644)
	home := filepath.Join(dir, "home")
	// lintian's user must be able to write its home and TMPDIR: Perl's File::Spec skips a TMPDIR
	// it cannot write and falls back to /tmp, where lintian leaves its ELF index behind.
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(home, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	// --pedantic -I: every tag but experimental ones is shown, so an unused override is too.
	cmd := exec.Command("lintian", "-I", "--pedantic", "--tag-display-limit", "0", deb)
	cmd.Env = append(os.Environ(), "HOME="+home, "TMPDIR="+home, "LC_ALL=C.UTF-8")
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	var bad []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") || strings.Contains(line, "unused-override") ||
			strings.Contains(line, "mismatched-override") {
			bad = append(bad, line)
		}
	}
	if err != nil || len(bad) > 0 {
		t.Fatalf("lintian: %v\n%s\nfull output:\n%s", err, strings.Join(bad, "\n"), out)
	}
	t.Logf("lintian:\n%s", out)

	// The overrides are shipped where lintian reads them, each after its own comment.
	shipped, err := os.ReadFile(filepath.Join(builtDeb.extract, "usr/share/lintian/overrides/stapling-agent"))
	if err != nil {
		t.Fatal(err)
	}
	// A block of lines (up to a blank line) with overrides starts with the comment for them.
	overrides, commented := 0, false
	for _, line := range strings.Split(string(shipped), "\n") {
		switch {
		case line == "":
			commented = false
		case strings.HasPrefix(line, "#"):
			commented = true
		case strings.HasPrefix(line, "stapling-agent: "):
			overrides++
			if !commented {
				t.Errorf("override without a comment justifying it: %q", line)
			}
		default:
			t.Errorf("overrides: unexpected line %q", line)
		}
	}
	if overrides == 0 {
		t.Fatal("no overrides parsed")
	}
}

// The .deb's control fields, conffiles and Debian's own files: Depends (the maintainer scripts
// and the units need systemd; /bin/sh is Essential), every file under /etc a conffile, the
// copyright file in the machine-readable format, a changelog lintian can parse.
func TestDebControlAndConffiles(t *testing.T) {
	debPackage(t)
	fields := run(t, "", nil, "dpkg-deb", "-f", builtDeb.deb, "Depends", "Section", "Priority")
	for _, want := range []string{"Depends: systemd\n", "Section: admin\n", "Priority: optional\n"} {
		if !strings.Contains(fields, want) {
			t.Errorf("control: want %q in\n%s", want, fields)
		}
	}
	conffiles := run(t, "", nil, "dpkg-deb", "-I", builtDeb.deb, "conffiles")
	contents := run(t, "", nil, "dpkg-deb", "-c", builtDeb.deb)
	etc := 0
	for _, line := range strings.Split(contents, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "-") || !strings.HasPrefix(f[5], "./etc/") {
			continue
		}
		etc++
		if !strings.Contains(conffiles, strings.TrimPrefix(f[5], ".")+"\n") {
			t.Errorf("%s is not a conffile:\n%s", f[5], conffiles)
		}
	}
	if etc < 5 {
		t.Fatalf("%d files under /etc in\n%s", etc, contents)
	}
	for _, want := range []string{"./usr/share/doc/stapling-agent/copyright", "./usr/share/doc/stapling-agent/changelog.Debian.gz",
		"./usr/share/lintian/overrides/stapling-agent", "./usr/share/bash-completion/completions/stapling-agent",
		"./etc/default/stapling-agent", "./usr/share/man/man8/stapling-agent.8.gz"} {
		if !strings.Contains(contents, " "+want+"\n") {
			t.Errorf(".deb lacks %s", want)
		}
	}
	if strings.Contains(contents, "/etc/sysconfig/") || strings.Contains(contents, "/usr/share/licenses/") {
		t.Error("the .deb carries the RPM's /etc/sysconfig or /usr/share/licenses")
	}
	copyright, _ := os.ReadFile(filepath.Join(builtDeb.extract, "usr/share/doc/stapling-agent/copyright"))
	if !strings.HasPrefix(string(copyright), "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") ||
		!strings.Contains(string(copyright), "\nLicense: Expat\n") {
		t.Errorf("copyright is not DEP-5 with the Expat (MIT) license:\n%s", copyright)
	}
}

// The scriptlets' interpreter and what they call are declared: rpm orders /bin/sh and systemd
// before the package and refuses to install without them; dpkg the same for systemd.
func TestScriptletDependencies(t *testing.T) {
	packages(t)
	req := run(t, "", nil, "rpm", "-qp", "--requires", built.v1)
	for _, want := range []string{"/bin/sh\n", "systemd\n"} {
		if !strings.Contains(req, want) {
			t.Errorf("RPM requires:\n%s\nwant %q", req, want)
		}
	}
	debPackage(t)
	if dep := run(t, "", nil, "dpkg-deb", "-f", builtDeb.deb, "Depends"); dep != "systemd\n" {
		t.Errorf(".deb Depends: %q", dep)
	}
}

// The per-host environment file: /etc/sysconfig in the RPM, /etc/default in the .deb, both
// config (noreplace); both units read both; and what the file documents is real: each
// STAPLING_AGENT_<KEY> it names is read (a bad value fails config check, the example passes),
// the examples take effect, and the audit unit's command lines, run as systemd would, pass
// STAPLING_AGENT_ARGS and STAPLING_AGENT_AUDIT_ARGS to the audit.
func TestEnvironmentFile(t *testing.T) {
	packages(t)
	flags := run(t, "", nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]`, built.v1)
	if !strings.Contains(flags, "/etc/sysconfig/stapling-agent cn -rw-r--r--\n") || strings.Contains(flags, "/etc/default/") {
		t.Errorf("RPM: want /etc/sysconfig/stapling-agent as %%config(noreplace) 0644 and no /etc/default:\n%s", flags)
	}
	debPackage(t)
	if c := run(t, "", nil, "dpkg-deb", "-I", builtDeb.deb, "conffiles"); !strings.Contains(c, "/etc/default/stapling-agent\n") {
		t.Errorf(".deb conffiles lack /etc/default/stapling-agent:\n%s", c)
	}
	shipped, _ := os.ReadFile(filepath.Join(built.extract, "etc/sysconfig/stapling-agent"))
	deb, _ := os.ReadFile(filepath.Join(builtDeb.extract, "etc/default/stapling-agent"))
	if len(shipped) == 0 || string(shipped) != string(deb) {
		t.Fatalf("the two packages' environment files differ or are empty")
	}

	units := map[string]string{}
	for _, u := range []string{"stapling-agent.service", "stapling-agent-audit.service"} {
		b, _ := os.ReadFile(filepath.Join(built.extract, "usr/lib/systemd/system", u))
		units[u] = string(b)
		for _, want := range []string{"\nEnvironmentFile=-/etc/sysconfig/stapling-agent\n", "\nEnvironmentFile=-/etc/default/stapling-agent\n"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q", u, strings.TrimSpace(want))
			}
		}
	}
	for _, want := range []string{"\nExecStart=/usr/sbin/stapling-agent run $STAPLING_AGENT_ARGS\n", "\nExecReload=/usr/sbin/stapling-agent config check $STAPLING_AGENT_ARGS\n"} {
		if !strings.Contains(units["stapling-agent.service"], want) {
			t.Errorf("stapling-agent.service lacks %q", strings.TrimSpace(want))
		}
	}

	// Every documented STAPLING_AGENT_<KEY>, as the file's example and as nonsense.
	examples := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^#([A-Z][A-Z0-9_]*)=(.*)$`).FindAllStringSubmatch(string(shipped), -1) {
		examples[m[1]] = m[2]
	}
	root := t.TempDir()
	checked := 0
	for name, value := range examples {
		switch name {
		case "STAPLING_AGENT_ARGS", "STAPLING_AGENT_AUDIT_ARGS", "STAPLING_AGENT_THROUGH_PID1", "TEXTFILE_DIR":
			continue // not configuration keys: below
		}
		checked++
		for v, want := range map[string]int{value: 0, "banana": 2} {
			cmd := exec.Command(built.bin, "--root", root, "config", "check")
			cmd.Env = append(os.Environ(), name+"="+v)
			code := 0
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != want {
				t.Errorf("%s=%s: config check exit %d, want %d\n%s", name, v, code, want, out)
			}
		}
	}
	if checked < 8 {
		t.Fatalf("only %d STAPLING_AGENT_<KEY> examples in the file:\n%s", checked, shipped)
	}
	cmd := exec.Command(built.bin, append([]string{"--root", root, "config", "check"}, strings.Fields(examples["STAPLING_AGENT_ARGS"])...)...)
	cmd.Env = append(os.Environ(), "STAPLING_AGENT_MODE="+examples["STAPLING_AGENT_MODE"], "STAPLING_AGENT_POLICY_THRESHOLD="+examples["STAPLING_AGENT_POLICY_THRESHOLD"])
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration valid: mode enforce, policy 5 failures in 10m0s") {
		t.Fatalf("the file's examples did not take effect: %v\n%s", err, out)
	}

	// The audit unit's two ExecStart lines on a sample host, the arguments from the
	// environment: the first as systemd splits "$VAR" words, the second through its shell.
	host := filepath.Join(t.TempDir(), "host")
	run(t, "", nil, "../scripts/sample-host.sh", host)
	state, textfiles := filepath.Join(host, "state"), filepath.Join(host, "textfiles")
	os.Mkdir(state, 0o700)
	os.Mkdir(textfiles, 0o755)
	env := map[string]string{"STAPLING_AGENT_ARGS": "--root " + host, "STAPLING_AGENT_AUDIT_ARGS": "--since 1h --no-exec", "TEXTFILE_DIR": textfiles}
	var execs []string
	for _, m := range regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindAllStringSubmatch(units["stapling-agent-audit.service"], -1) {
		execs = append(execs, strings.NewReplacer("/usr/sbin/stapling-agent", built.bin, "/var/lib/stapling-agent", state).Replace(m[1]))
	}
	if len(execs) != 2 || !strings.HasPrefix(execs[1], "/bin/sh -c '") {
		t.Fatalf("audit unit ExecStart lines: %q", execs)
	}
	var argv []string
	for _, w := range strings.Fields(execs[0]) {
		if strings.HasPrefix(w, "$") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
		} else {
			argv = append(argv, w)
		}
	}
	script := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(execs[1], "/bin/sh -c '"), "'"), "$$", "$")
	for _, c := range []*exec.Cmd{exec.Command(argv[0], argv[1:]...), exec.Command("/bin/sh", "-c", script)} {
		c.Env = os.Environ()
		for k, v := range env {
			c.Env = append(c.Env, k+"="+v)
		}
		out, err := c.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Fatalf("%v: want the sample host's critical audit (exit 2), got %v\n%s", c.Args, err, out)
		}
	}
	js, _ := os.ReadFile(filepath.Join(state, "last-audit.json"))
	prom, _ := os.ReadFile(filepath.Join(textfiles, "stapling_agent.prom"))
	if !strings.Contains(string(js), `"status": "critical"`) || !strings.Contains(string(prom), "stapling_agent_") {
		t.Fatalf("the audit unit's outputs:\n%s\n%s", js, prom)
	}
}

// bash completion, generated from the command at package time, is in both packages at
// bash-completion's path, and completes: sourced into bash, its function offers "audit" for
// `stapling-agent au<TAB>` and the audit's flags for `stapling-agent audit --fo<TAB>`, asking
// the packaged binary as it would on a host.
func TestBashCompletion(t *testing.T) {
	packages(t)
	debPackage(t)
	need(t, "bash")
	const path = "/usr/share/bash-completion/completions/stapling-agent"
	if files := run(t, "", nil, "rpm", "-qpl", built.v1); !strings.Contains(files, path+"\n") {
		t.Errorf("RPM lacks %s", path)
	}
	if files := run(t, "", nil, "dpkg-deb", "-c", builtDeb.deb); !strings.Contains(files, " ."+path+"\n") {
		t.Errorf(".deb lacks %s", path)
	}
	rpmFile, _ := os.ReadFile(filepath.Join(built.extract, path))
	debFile, _ := os.ReadFile(filepath.Join(builtDeb.extract, path))
	if len(rpmFile) == 0 || string(rpmFile) != string(debFile) {
		t.Fatal("the packages' completion files differ or are empty")
	}
	// As on a host: bash-completion's loader finds the file by the command's name in
	// XDG_DATA_DIRS/bash-completion/completions (here the RPM's tree) and sources it; cobra's
	// function needs bash-completion's helpers (_get_comp_words_by_ref).
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("bash-completion missing in CI: %v", err)
		}
		t.Skipf("bash-completion not installed: %v", err)
	}
	const complete = `source /usr/share/bash-completion/bash_completion
__load_completion stapling-agent || exit 1
spec=$(complete -p stapling-agent) || exit 1
fn=$(printf '%s\n' "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
"$fn" stapling-agent "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"stapling-agent", "au"}, "audit\n"},
		{[]string{"stapling-agent", "re"}, "remediate\nrevert\n"},
		{[]string{"stapling-agent", "audit", "--fo"}, "--format\n"},
	} {
		cmd := exec.Command("bash", append([]string{"--norc", "--noprofile", "-c", complete, "complete"}, tc.words...)...)
		// The function runs `stapling-agent __complete ...`: the packaged binary, by name.
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(built.bin)+":"+os.Getenv("PATH"),
			"XDG_DATA_DIRS="+filepath.Join(built.extract, "usr/share"), "BASH_COMPLETION_USER_DIR="+t.TempDir())
		// stderr: cobra's compopt complains outside a real completion; not what is offered.
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || string(out) != tc.want {
			t.Errorf("%q<TAB>: %v %q, want %q\n%s", strings.Join(tc.words, " "), err, out, tc.want, stderr.String())
		}
	}
}

// The man pages as packaged: each one's .TH line carries the package's version, the main page
// has the sections a command's help cannot give, and its FILES names every file the packages
// install outside /usr/share/man and /usr/share/doc; every page renders without a warning the
// way lintian renders it (man --warnings at 80 columns).
func TestManPages(t *testing.T) {
	packages(t)
	debPackage(t)
	need(t, "man")
	pages, _ := filepath.Glob(filepath.Join(builtDeb.extract, "usr/share/man/man8/*.8.gz"))
	if len(pages) < 8 {
		t.Fatalf("%d man pages in the .deb", len(pages))
	}
	var main string
	for _, p := range pages {
		text := gunzip(t, p)
		th := strings.SplitN(strings.SplitN(text, ".TH ", 2)[1], "\n", 2)[0]
		if !strings.Contains(th, `"stapling-agent 0.1.0-1"`) {
			t.Errorf("%s: .TH %s", filepath.Base(p), th)
		}
		if filepath.Base(p) == "stapling-agent.8.gz" {
			main = text
		} else if !strings.Contains(text, `\fBstapling-agent(8)\fP`) && !strings.Contains(text, `\fBstapling-agent-`) {
			t.Errorf("%s does not point to stapling-agent(8)", filepath.Base(p))
		}
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", p)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANROFFSEQ=", "MANWIDTH=80")
		cmd.Stdout = io.Discard
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man %s: %v\n%s", filepath.Base(p), err, stderr.String())
		}
	}
	for _, sh := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", `"FILES"`, `"CONFIGURATION"`, `"ENVIRONMENT"`, `"EXIT STATUS"`, `"SIGNALS"`, "SEE ALSO"} {
		if !strings.Contains(main, "\n.SH "+sh+"\n") {
			t.Errorf("stapling-agent.8 lacks .SH %s", sh)
		}
	}
	files := section(main, `"FILES"`)
	for _, list := range []string{run(t, "", nil, "rpm", "-qpl", built.v1), run(t, "", nil, "dpkg-deb", "-c", builtDeb.deb)} {
		sc := bufio.NewScanner(strings.NewReader(list))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			p := strings.TrimPrefix(f[len(f)-1], ".")
			if strings.HasSuffix(p, "/") || strings.HasPrefix(p, "/usr/share/man/") || strings.HasPrefix(p, "/usr/share/doc/") ||
				strings.HasPrefix(p, "/usr/share/licenses/") || strings.HasPrefix(p, "/usr/share/lintian/") || p == "/usr/sbin/stapling-agent" {
				continue
			}
			if info, err := os.Stat(filepath.Join(built.extract, p)); err == nil && info.IsDir() && p != "/var/lib/stapling-agent" {
				continue
			}
			// A file is named by its path, or by its name after its directory's other file.
			if !strings.Contains(files, `\fI`+p+`\fP`) && !strings.Contains(files, `\fI`+filepath.Base(p)+`\fP`) {
				t.Errorf("FILES does not name %s", p)
			}
		}
	}
	exit := section(main, `"EXIT STATUS"`)
	for _, want := range []string{"0 ok, 1 warning, 2 critical, 3 unknown", "STAPLING UNKNOWN", "0 valid; 2 invalid"} {
		if !strings.Contains(exit, want) {
			t.Errorf("EXIT STATUS lacks %q", want)
		}
	}
	signals := section(main, `"SIGNALS"`)
	for _, want := range []string{`\fBSIGTERM\fP`, `\fBSIGINT\fP`, `\fBSIGHUP\fP`} {
		if !strings.Contains(signals, want) {
			t.Errorf("SIGNALS lacks %s", want)
		}
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the roff text of one .SH section of page, up to the next.
func section(page, name string) string {
	_, rest, _ := strings.Cut(page, "\n.SH "+name+"\n")
	body, _, _ := strings.Cut(rest, "\n.SH ")
	return body
}
