package agent

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/apacheconf"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/state"
)

// slowHost is a fake EA4 host whose stand-ins take a few random milliseconds, so a kill can
// land anywhere, and record what a restart loaded: "restart <sha of the include>". Each holds
// ROOT/standin.lock while it runs, so the test can wait for the children of a killed agent.
func slowHost(t *testing.T) string {
	t.Helper()
	root := cliHost(t)
	inc := filepath.Join(root, ea4Include)
	lock := filepath.Join(root, "standin.lock")
	write := func(p, body string) {
		script := fmt.Sprintf("#!/bin/bash\nexec 9>>%q\nflock 9\nsleep 0.00$((RANDOM %% 8))\n%s\n", lock, body)
		os.WriteFile(filepath.Join(root, p), []byte(script), 0o755)
	}
	write("/usr/sbin/apachectl", "echo 'Syntax OK'")
	write("/usr/local/cpanel/scripts/restartsrv_httpd",
		fmt.Sprintf("echo \"restart $(sha256sum < %q | cut -c1-16)\" >>%q/standins.log", inc, root))
	return root
}

// waitStandins returns once no stand-in is running (they hold standin.lock).
func waitStandins(t *testing.T, root string) {
	f, err := os.OpenFile(filepath.Join(root, "standin.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

func sha16(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b))[:16] }

func lastRestart(t *testing.T, root string) string {
	lines := strings.Split(strings.TrimSpace(standins(t, root)), "\n")
	return strings.TrimPrefix(lines[len(lines)-1], "restart ")
}

func tempFiles(t *testing.T, root string) []string {
	m, _ := filepath.Glob(filepath.Join(root, filepath.Dir(ea4Include), ".stapling-agent-*"))
	return m
}

// Crash safety: kill -9 at random moments of remediate and revert, 200 times. The include is
// always the old bytes or the complete new bytes; the next full run cleans temp files, ends
// with the block in place, and Apache's last restart loaded exactly those bytes.
func TestReliabilityKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	root := slowHost(t)
	inc := filepath.Join(root, ea4Include)
	applied, _ := apacheconf.ApplyBlock([]byte(adminBytes))
	rng := rand.New(rand.NewPCG(7, 11))
	killedMidway := 0
	for i := 0; i < 200; i++ {
		action := []string{"remediate", "revert"}[rng.IntN(2)]
		cmd := exec.Command(agentBin, "--root", root, action)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The random moment to kill at; this sleep picks it, it asserts nothing about time.
		time.Sleep(time.Duration(rng.IntN(25000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killedMidway++
		}
		waitStandins(t, root)
		got, _ := os.ReadFile(inc)
		if string(got) != adminBytes && string(got) != string(applied) {
			t.Fatalf("iteration %d (%s): include is neither the old nor the new bytes: %q", i, action, got)
		}
		if i%10 != 9 {
			continue
		}
		r := runAgent(t, nil, "--root", root, "remediate")
		waitStandins(t, root)
		got, _ = os.ReadFile(inc)
		if r.code != 0 || string(got) != string(applied) {
			t.Fatalf("iteration %d: finishing run exit %d, include %q\n%s", i, r.code, got, r.stderr)
		}
		if temps := tempFiles(t, root); len(temps) != 0 {
			t.Fatalf("iteration %d: temp files left: %v", i, temps)
		}
		if last := lastRestart(t, root); last != sha16(applied) {
			t.Fatalf("iteration %d: Apache's last restart loaded %s, the include on disk is %s (an interrupted remediation was not finished)",
				i, last, sha16(applied))
		}
	}
	if killedMidway < 50 {
		t.Fatalf("only %d of 200 runs were killed before finishing: the test did not test much", killedMidway)
	}
}

// Concurrency: remediate, revert and two daemons at once. One block at most, the admin's
// bytes intact, every restart accounted for by a completed change in the journal.
func TestReliabilityConcurrentInstances(t *testing.T) {
	root := slowHost(t)
	logDir := filepath.Join(root, "var/log/apache2")
	os.MkdirAll(logDir, 0o755)
	os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs"))
	os.WriteFile(filepath.Join(logDir, "error_log"),
		[]byte(outage(3, time.Minute, "111", "AH01974", "could not connect to OCSP responder '127.0.0.1:9'")), 0o644)

	var daemons []*exec.Cmd
	for i := 0; i < 2; i++ {
		d := exec.Command(agentBin, "--root", root, "run")
		d.Start()
		daemons = append(daemons, d)
	}
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = runAgent(t, nil, "--root", root, []string{"remediate", "revert"}[i%2]).code
		}()
	}
	wg.Wait()
	for _, d := range daemons {
		d.Process.Signal(syscall.SIGTERM)
		d.Wait()
	}
	waitStandins(t, root)
	for i, c := range codes {
		if c != 0 {
			t.Errorf("instance %d exited %d", i, c)
		}
	}
	got, _ := os.ReadFile(filepath.Join(root, ea4Include))
	if !strings.HasPrefix(string(got), adminBytes) || strings.Count(string(got), "# BEGIN stapling-agent") > 1 {
		t.Fatalf("include %q", got)
	}
	entries, _ := state.New(filepath.Join(root, config.DefaultStateDir), time.Now).Journal()
	done := 0
	for _, e := range entries {
		if e.Step == "done" {
			done++
		}
	}
	if n := strings.Count(standins(t, root), "restart "); n != done || n > 18 {
		t.Fatalf("%d restarts for %d completed changes", n, done)
	}
}
