// Package testguard makes a test binary prove that it leaves nothing behind: no process it
// started (a lab Apache, an OCSP responder, a daemon) still running, and no file outside its
// temporary directories. A TestMain wraps m.Run with Start and Finish.
//
// Start gives the run a directory of its own and points TMPDIR at it, so every t.TempDir(),
// every lab tree and every child process's temporary file lands there, and marks the
// environment with RunVar, which every process the tests start inherits. Finish then looks
// for live processes that carry the mark (or name the run directory on their command line:
// Apache, once daemonized, keeps its arguments), kills them and reports them; and for files
// that appeared in the original temporary directory or in the package directory.
package testguard

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// RunVar marks the environment of every process a guarded test binary starts.
const RunVar = "STAPLING_AGENT_TEST_RUN"

// Prefix names run directories in the system's temporary directory; concurrently running
// packages' run directories are not leaks.
const Prefix = "stapling-agent-test-"

// Guard is one test binary's run.
type Guard struct {
	Dir      string // the run's temporary directory (TMPDIR while it runs)
	origTmp  string
	tmpSeen  map[string]bool
	pkgDir   string
	pkgFiles map[string]bool
}

// Start creates the run directory, points TMPDIR at it and marks the environment.
func Start() (*Guard, error) {
	g := &Guard{origTmp: os.TempDir()}
	var err error
	if g.Dir, err = os.MkdirTemp(g.origTmp, Prefix); err != nil {
		return nil, err
	}
	// Lab trees are read by Apache's unprivileged children.
	if err := os.Chmod(g.Dir, 0o755); err != nil {
		return nil, err
	}
	if g.tmpSeen, err = names(g.origTmp); err != nil {
		return nil, err
	}
	if g.pkgDir, err = os.Getwd(); err != nil {
		return nil, err
	}
	if g.pkgFiles, err = tree(g.pkgDir); err != nil {
		return nil, err
	}
	if err := os.Setenv("TMPDIR", g.Dir); err != nil {
		return nil, err
	}
	return g, os.Setenv(RunVar, g.Dir)
}

// Finish kills and reports leaked processes, reports files left outside the run directory,
// and removes the run directory. The error says what leaked; nil means nothing did.
func (g *Guard) Finish() error {
	var problems []string
	for _, p := range g.leakedProcesses() {
		msg := fmt.Sprintf("process %d still running: %s", p.pid, p.args)
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
			msg += fmt.Sprintf(" (kill: %v)", err)
		}
		problems = append(problems, msg)
	}
	now, err := names(g.origTmp)
	if err != nil {
		problems = append(problems, err.Error())
	}
	var left []string
	for n := range now {
		if !g.tmpSeen[n] && !strings.HasPrefix(n, Prefix) && !strings.HasPrefix(n, "go-build") {
			left = append(left, filepath.Join(g.origTmp, n))
		}
	}
	if files, err := tree(g.pkgDir); err == nil {
		for f := range files {
			if !g.pkgFiles[f] {
				left = append(left, f)
			}
		}
	}
	sort.Strings(left)
	for _, f := range left {
		problems = append(problems, "file left outside the test's temporary directories: "+f)
	}
	if err := os.RemoveAll(g.Dir); err != nil {
		problems = append(problems, fmt.Sprintf("remove %s: %v", g.Dir, err))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// Main is the whole TestMain for a package that needs nothing else: os.Exit(testguard.Main(m)).
func Main(m *testing.M) int {
	g, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testguard: %v\n", err)
		return 1
	}
	code := m.Run()
	if err := g.Finish(); err != nil {
		fmt.Fprintf(os.Stderr, "testguard: the tests left things behind:\n%s\n", err)
		return 1
	}
	return code
}

type proc struct {
	pid  int
	args string
}

// leakedProcesses are live processes other than this one that carry the run's mark in their
// environment or name the run directory in their arguments.
func (g *Guard) leakedProcesses() []proc {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	mark := []byte(RunVar + "=" + g.Dir + "\x00")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err != nil || zombie(st) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(append(environ, 0), mark) || bytes.Contains(cmdline, []byte(g.Dir)) {
			out = append(out, proc{pid, strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))})
		}
	}
	return out
}

// zombie: the state field of /proc/PID/stat, after the parenthesised command name, is Z.
func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func names(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(entries))
	for _, e := range entries {
		m[e.Name()] = true
	}
	return m, nil
}

// tree is every path under dir.
func tree(dir string) (map[string]bool, error) {
	m := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		m[p] = true
		return nil
	})
	return m, err
}
