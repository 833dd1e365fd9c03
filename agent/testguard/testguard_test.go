package testguard

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The guard finds what a careless test leaves: a process started with the run's mark, and a
// file written straight into the system's temporary directory.
func TestFinishReportsLeaks(t *testing.T) {
	t.Setenv("TMPDIR", os.TempDir())
	t.Setenv(RunVar, "")
	g, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(g.origTmp, "stapling-agent-leak-check")
	if err := os.WriteFile(stray, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(stray)
	err = g.Finish()
	if err == nil || !strings.Contains(err.Error(), "sleep 60") || !strings.Contains(err.Error(), stray) {
		t.Fatalf("Finish = %v", err)
	}
	if werr := sleeper.Wait(); werr == nil {
		t.Fatal("the leaked process was not killed")
	}
	if _, err := os.Stat(g.Dir); !os.IsNotExist(err) {
		t.Fatal("run directory not removed")
	}
}

// A clean run finishes without complaint.
func TestFinishClean(t *testing.T) {
	t.Setenv("TMPDIR", os.TempDir())
	t.Setenv(RunVar, "")
	g, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("true").Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(os.TempDir(), "inside-the-run"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Finish(); err != nil {
		t.Fatal(err)
	}
}
