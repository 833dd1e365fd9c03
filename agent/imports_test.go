package agent

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// Everything the agent runs goes through apacheconf's command runner, the one place with a
// timeout, a process-group kill and errors that carry the output (as node_exporter enforces
// its rules with depguard). This test fails when another package of the binary imports os/exec.
func TestOnlyTheRunnerImportsExec(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports,Module", "../agent/cmd/stapling-agent").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	ours := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
			Module     *struct{ Path string }
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || p.Module.Path != "github.com/stapling-agent/stapling-agent" {
			continue
		}
		ours++
		for _, imp := range p.Imports {
			if imp == "os/exec" && p.ImportPath != "github.com/stapling-agent/stapling-agent/apacheconf" {
				t.Errorf("%s imports os/exec: run commands through apacheconf.Runner", p.ImportPath)
			}
		}
	}
	if ours < 10 {
		t.Fatalf("only %d of our packages listed: the check looked at the wrong thing", ours)
	}
}
