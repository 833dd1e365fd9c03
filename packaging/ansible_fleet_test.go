package packaging

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// playbook runs ansible-playbook from this directory with a private Ansible home and temp
// directories, and returns its output and exit code.
func playbook(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	need(t, "ansible-playbook")
	cmd := exec.Command("ansible-playbook", append(args, "-e", "ansible_python_interpreter=/usr/bin/python3")...)
	// PYTHONDONTWRITEBYTECODE: loading filter_plugins/ must not leave __pycache__ in the tree.
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "PYTHONDONTWRITEBYTECODE=1", "ANSIBLE_LOCAL_TEMP="+dir+"/tmp",
		"ANSIBLE_REMOTE_TEMP="+dir+"/tmp", "ANSIBLE_HOME="+dir+"/home", "ANSIBLE_RETRY_FILES_ENABLED=0")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ansible-playbook: %v", err)
	}
	return string(out), code
}

// fakeAudit writes a stand-in stapling-agent that prints audit (exit code) and, when log is
// set, appends the path it was run from to log.
func fakeAudit(t *testing.T, path, audit string, code int, log string) {
	t.Helper()
	script := "#!/bin/sh\n"
	if log != "" {
		script += fmt.Sprintf("echo \"$0\" >> '%s'\n", log)
	}
	script += "cat <<'EOF'\n" + audit + "\nEOF\n" + fmt.Sprintf("exit %d\n", code)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

type fleetReport struct {
	Schema, Pattern, Summary string
	Limit                    *string
	Hosts, Answered          []string
	NotAnswered              []string `json:"not_answered"`
	Audits                   map[string]struct{ Status string }
	ByResponder              []struct {
		Responder   string
		HostCount   int `json:"host_count"`
		Failures    int
		First, Last string
	} `json:"by_responder"`
}

func readReport(t *testing.T, report string) (fleetReport, string, string) {
	t.Helper()
	var r fleetReport
	b, err := os.ReadFile(filepath.Join(report, "fleet-report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("fleet-report.json: %v\n%s", err, b)
	}
	csv, _ := os.ReadFile(filepath.Join(report, "fleet-report.csv"))
	byResp, _ := os.ReadFile(filepath.Join(report, "fleet-by-responder.csv"))
	return r, string(csv), string(byResp)
}

// The fleet report from audit.yml over five inventory hosts, all this machine
// (ansible_connection=local), each with its own stand-in audit: a CA outage on three hosts,
// one host failing on every CA, a host whose name and responder are hostile CSV, and a host
// with no binary. Then --limit, a host pattern in stapling_agent_hosts, a pattern that
// matches nothing (the previous report must not survive), and the copied-binary mode.
func TestAnsibleFleetReport(t *testing.T) {
	dir := t.TempDir()
	const evilHost = "=cmd|' /C calc'!A0,\"x\"\nweb9"
	const evilResp = "=HYPERLINK(\"http://x\"),evil\nline2"
	audit := func(status string, first, last string, byResp map[string]int) string {
		total := 0
		for _, n := range byResp {
			total += n
		}
		r, _ := json.Marshal(byResp)
		return fmt.Sprintf(`{"schema": "stapling-agent/audit/v1", "status": %q, "summary": "s",
 "failures": {"total": %d, "by_cause": {"connect_timeout": %d}, "by_responder": %s, "first": %q, "last": %q},
 "stapling": {"effective": "on"}}`, status, total, total, r, first, last)
	}
	hosts := []struct {
		name, audit string
		code        int
	}{
		// One CA down for the fleet: web1-web3 fail on ocsp.ca-one.test, at different times.
		{"web1", audit("critical", "2026-01-02T10:00:00.5Z", "2026-01-02T11:00:00Z", map[string]int{"http://ocsp.ca-one.test": 5}), 2},
		{"web2", audit("critical", "2026-01-02T09:30:00+01:00", "2026-01-02T12:00:00Z", map[string]int{"http://ocsp.ca-one.test": 4}), 2},
		{"web3", audit("warning", "2026-01-02T10:15:00Z", "2026-01-02T10:20:00Z", map[string]int{"http://ocsp.ca-one.test": 1}), 1},
		// One host whose network fails every CA.
		{"web4", audit("critical", "2026-01-03T00:00:00Z", "2026-01-03T01:00:00Z",
			map[string]int{"http://ocsp.ca-one.test": 2, "http://ocsp.ca-two.test": 2, "http://ocsp.ca-three.test": 2}), 2},
		{evilHost, audit("critical", "2026-01-04T00:00:00Z", "2026-01-04T00:00:01Z", map[string]int{evilResp: 3}), 2},
	}
	inv := "all:\n  hosts:\n"
	for i, h := range hosts {
		bin := filepath.Join(dir, fmt.Sprintf("fake%d", i))
		fakeAudit(t, bin, h.audit, h.code, "")
		name, _ := json.Marshal(h.name)
		inv += fmt.Sprintf("    %s: {ansible_connection: local, stapling_agent_bin: %q}\n", name, bin)
	}
	inv += fmt.Sprintf("    nobin: {ansible_connection: local, stapling_agent_bin: %q}\n", filepath.Join(dir, "missing"))
	invPath := filepath.Join(dir, "inventory.yml")
	os.WriteFile(invPath, []byte(inv), 0o644)
	report := filepath.Join(dir, "report")
	base := []string{"-i", invPath, "ansible/audit.yml", "-e", "stapling_agent_install=false", "-e", "stapling_agent_report_dir=" + report}

	t.Run("all", func(t *testing.T) {
		out, code := playbook(t, dir, base...)
		// nobin has no audit: it fails, after the report is written.
		if code != 2 || !strings.Contains(out, "fatal: [nobin]") {
			t.Fatalf("audit.yml: exit %d\n%s", code, out)
		}
		r, csv, byResp := readReport(t, report)
		all := []string{evilHost, "nobin", "web1", "web2", "web3", "web4"}
		if !reflect.DeepEqual(r.Hosts, all) || !reflect.DeepEqual(r.NotAnswered, []string{"nobin"}) || r.Limit != nil || r.Pattern != "all" ||
			r.Summary != "6 hosts (pattern all, limit none): 5 answered, 1 did not" || r.Schema != "stapling-agent/fleet-report/v1" {
			t.Fatalf("report: %+v", r)
		}
		// The hostile host name and responder are each one quoted cell: quotes doubled, the
		// newline escaped (a row stays one line), a leading single quote so a spreadsheet
		// shows the "=" text instead of evaluating it.
		want := "host,status,failures,top_cause,top_responder,effective_stapling\n" +
			`"'=cmd|' /C calc'!A0,""x""\x0aweb9",critical,3,connect_timeout,"'=HYPERLINK(""http://x""),evil\x0aline2",on` + "\n" +
			"nobin,failed,,,,\n" +
			"web1,critical,5,connect_timeout,http://ocsp.ca-one.test,on\n" +
			"web2,critical,4,connect_timeout,http://ocsp.ca-one.test,on\n" +
			"web3,warning,1,connect_timeout,http://ocsp.ca-one.test,on\n" +
			"web4,critical,6,connect_timeout,http://ocsp.ca-one.test,on\n"
		if csv != want {
			t.Fatalf("CSV:\n%s\nwant:\n%s", csv, want)
		}
		// Many hosts, one CA: ca-one first, four hosts, its first failure the earliest of
		// theirs (web2's 09:30+01:00 is 08:30Z) and its last the latest. One host, every CA:
		// web4 alone on ca-two and ca-three.
		want = "responder,hosts,failures,first,last,failing_hosts\n" +
			"http://ocsp.ca-one.test,4,12,2026-01-02T09:30:00+01:00,2026-01-03T01:00:00Z,web1:5 web2:4 web4:2 web3:1\n" +
			`"'=HYPERLINK(""http://x""),evil\x0aline2",1,3,2026-01-04T00:00:00Z,2026-01-04T00:00:01Z,"'=cmd|' /C calc'!A0,""x""\x0aweb9:3"` + "\n" +
			"http://ocsp.ca-three.test,1,2,2026-01-03T00:00:00Z,2026-01-03T01:00:00Z,web4:2\n" +
			"http://ocsp.ca-two.test,1,2,2026-01-03T00:00:00Z,2026-01-03T01:00:00Z,web4:2\n"
		if byResp != want {
			t.Fatalf("by-responder CSV:\n%s\nwant:\n%s", byResp, want)
		}
		if len(r.ByResponder) != 4 || r.ByResponder[0].HostCount != 4 || r.ByResponder[1].Responder != evilResp {
			t.Fatalf("by_responder: %+v", r.ByResponder)
		}
	})

	t.Run("limit", func(t *testing.T) {
		out, code := playbook(t, dir, append(base, "-l", "web1,web4")...)
		if code != 0 {
			t.Fatalf("audit.yml -l web1,web4: exit %d\n%s", code, out)
		}
		r, csv, byResp := readReport(t, report)
		if !reflect.DeepEqual(r.Hosts, []string{"web1", "web4"}) || r.Limit == nil || *r.Limit != "web1,web4" || len(r.Audits) != 2 ||
			!strings.Contains(out, "2 hosts (pattern all, limit web1,web4): 2 answered, 0 did not") {
			t.Fatalf("report under --limit: %+v\n%s", r, out)
		}
		// Nothing from the previous, wider run survives.
		if strings.Contains(csv, "web2") || strings.Contains(csv, "nobin") || strings.Contains(byResp, "web2") || strings.Count(csv, "\n") != 3 {
			t.Fatalf("stale rows:\n%s\n%s", csv, byResp)
		}
	})

	t.Run("stapling_agent_hosts", func(t *testing.T) {
		// A host name, not a group, as the pattern: once a crash ('dict object' has no
		// attribute 'web2').
		out, code := playbook(t, dir, append(base, "-e", "stapling_agent_hosts=web2")...)
		r, csv, _ := readReport(t, report)
		if code != 0 || !reflect.DeepEqual(r.Hosts, []string{"web2"}) || r.Pattern != "web2" || strings.Count(csv, "\n") != 2 {
			t.Fatalf("audit.yml -e stapling_agent_hosts=web2: exit %d %+v\n%s", code, r, out)
		}
	})

	t.Run("no host matched", func(t *testing.T) {
		// The pattern matches no host within --limit: the report is still replaced, and says so.
		out, code := playbook(t, dir, append(base, "-e", "stapling_agent_hosts=web1", "-l", "web3")...)
		r, csv, byResp := readReport(t, report)
		if code != 0 || len(r.Hosts) != 0 || len(r.Audits) != 0 || r.Summary != "no host audited: pattern web1 matched no host within limit web3" ||
			csv != "host,status,failures,top_cause,top_responder,effective_stapling\n" || byResp != "responder,hosts,failures,first,last,failing_hosts\n" {
			t.Fatalf("exit %d %+v\n%s\n%s\n%s", code, r, csv, byResp, out)
		}
	})

	t.Run("copied binary", func(t *testing.T) {
		// stapling_agent_binary: copied to a temporary directory on the host, run from there,
		// removed; the installed binary (stapling_agent_bin: missing) is never used.
		runs := filepath.Join(dir, "runs")
		bin := filepath.Join(dir, "one-off")
		fakeAudit(t, bin, hosts[0].audit, 2, runs)
		out, code := playbook(t, dir, append(base, "-l", "nobin", "-e", "stapling_agent_binary="+bin)...)
		r, _, _ := readReport(t, report)
		ran, _ := os.ReadFile(runs)
		path := strings.TrimSpace(string(ran))
		if code != 0 || !reflect.DeepEqual(r.Answered, []string{"nobin"}) || path == "" || path == bin || strings.Contains(path, "\n") {
			t.Fatalf("exit %d %+v ran %q\n%s", code, r, ran, out)
		}
		if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
			t.Fatalf("the copied binary's directory %s is still there (%v)", filepath.Dir(path), err)
		}
	})
}

// enable.yml: role defaults lose to inventory host vars, the new mode is written only when
// `stapling-agent config check` accepts it and the reload runs only after the check, and the
// rollout goes a batch at a time, stopping at the first failing batch by default.
func TestAnsibleEnable(t *testing.T) {
	packages(t)
	dir := t.TempDir()
	shipped, _ := os.ReadFile("config.yaml")
	configs := map[string]string{
		"bad":    string(shipped) + "\nlog:\n  level: loud\n", // config check rejects it
		"good":   string(shipped),
		"stayer": string(shipped),
	}
	inv := "all:\n  hosts:\n"
	for _, h := range []string{"bad", "good", "stayer"} { // inventory order is rollout order
		cfg := filepath.Join(dir, h+".yaml")
		os.WriteFile(cfg, []byte(configs[h]), 0o600)
		inv += fmt.Sprintf("    %s: {ansible_connection: local, stapling_agent_bin: %q, stapling_agent_root: %q, stapling_agent_config: %q, stapling_agent_manage_service: false, stapling_agent_reload_argv: [touch, %q]",
			h, built.bin, dir, cfg, filepath.Join(dir, "reloaded-"+h))
		if h == "stayer" {
			inv += ", stapling_agent_mode: dry-run" // a host var beats the role's default (enforce)
		}
		inv += "}\n"
	}
	invPath := filepath.Join(dir, "inventory.yml")
	os.WriteFile(invPath, []byte(inv), 0o644)
	mode := func(h string) string {
		b, _ := os.ReadFile(filepath.Join(dir, h+".yaml"))
		return strings.Join(regexp.MustCompile(`(?m)^mode: .*$`).FindAllString(string(b), -1), "|")
	}
	reloaded := func(h string) bool {
		_, err := os.Stat(filepath.Join(dir, "reloaded-"+h))
		return err == nil
	}
	args := []string{"-i", invPath, "ansible/enable.yml", "-e", "stapling_agent_enforce_hosts=all", "-e", "stapling_agent_serial=1"}

	// bad goes first: its check fails, its config keeps dry-run, nothing reloads, and with
	// max_fail_percentage 0 (the default) the rollout stops before the next batch.
	out, code := playbook(t, dir, args...)
	if code == 0 || mode("bad") != "mode: dry-run" || reloaded("bad") || mode("good") != "mode: dry-run" || reloaded("good") {
		t.Fatalf("enable.yml with a bad config first: exit %d, bad %q reloaded %v, good %q\n%s", code, mode("bad"), reloaded("bad"), mode("good"), out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "bad.yaml")); string(b) != configs["bad"] {
		t.Fatalf("bad config changed:\n%s", b)
	}

	// Allowing failures, the rest roll out: good is enforced and reloaded; stayer's host var
	// (dry-run) wins over the role default.
	// (One batch: Ansible stops whenever every host of a batch failed, whatever the percentage.)
	out, code = playbook(t, dir, append(args, "-e", "stapling_agent_serial=3", "-e", "stapling_agent_max_fail_percentage=100")...)
	if code == 0 || mode("good") != "mode: enforce" || !reloaded("good") || mode("stayer") != "mode: dry-run" || reloaded("bad") {
		t.Fatalf("enable.yml: exit %d, good %q reloaded %v, stayer %q\n%s", code, mode("good"), reloaded("good"), mode("stayer"), out)
	}
	// Without a pattern, enable.yml touches the stapling_agent_enforce group only (none here).
	out, code = playbook(t, dir, "-i", invPath, "ansible/enable.yml")
	if code != 0 || !strings.Contains(out, "no hosts matched") {
		t.Fatalf("enable.yml without a pattern: exit %d\n%s", code, out)
	}
}

// The Ansible fact: the cached audit with its age and what is wrong with the file, or an
// "unknown" audit saying why there is none. STAPLING_AGENT_FACT_FILE points it at a test file.
func TestFactAgeAndProblems(t *testing.T) {
	dir := t.TempDir()
	audit := "{\n  \"status\": \"ok\"\n}\n"
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		status        string
		problems      []string
	}{
		{"fresh", audit, 0o600, "ok", []string{}},
		{"group-writable", audit, 0o664, "ok", []string{"writable by group or others (mode 664)"}},
		{"missing", "", 0, "unknown", []string{}},
		{"empty object", "{}\n", 0o600, "unknown", []string{"empty"}},
		{"not json", "garbage\n", 0o600, "unknown", []string{"not json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if tc.mode != 0 {
				os.WriteFile(f, []byte(tc.content), tc.mode)
				os.Chmod(f, tc.mode)
				old := time.Now().Add(-90 * time.Second)
				os.Chtimes(f, old, old)
			}
			cmd := exec.Command("sh", "stapling_agent.fact")
			cmd.Env = append(os.Environ(), "STAPLING_AGENT_FACT_FILE="+f)
			out, err := cmd.Output()
			var got struct {
				Status   string
				Age      *int64   `json:"fact_age_seconds"`
				Problems []string `json:"fact_problems"`
			}
			if err != nil || json.Unmarshal(out, &got) != nil {
				t.Fatalf("fact: %v\n%s", err, out)
			}
			if got.Status != tc.status || !reflect.DeepEqual(got.Problems, tc.problems) {
				t.Fatalf("fact: %+v\n%s", got, out)
			}
			if tc.status == "ok" && (got.Age == nil || *got.Age < 90 || *got.Age > 3600) {
				t.Fatalf("fact age: %+v\n%s", got, out)
			}
		})
	}
}
