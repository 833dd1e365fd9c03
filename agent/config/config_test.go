package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The commented example config the package ships must load as is, and ship dry-run.
func TestShippedConfigLoads(t *testing.T) {
	data, err := os.ReadFile("../../packaging/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(p, data, 0o600)
	c, err := Load(NewViper(), p, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "dry-run" || c.Policy.Threshold != 3 || c.Policy.Window != 10*time.Minute || c.Commands.Timeout != 120*time.Second {
		t.Fatalf("shipped config = %+v", c)
	}
}

func TestConfigEnvironment(t *testing.T) {
	t.Setenv("STAPLING_AGENT_POLICY_WINDOW", "5m")
	t.Setenv("STAPLING_AGENT_COMMANDS_CONFIGTEST", "/usr/sbin/httpd -t -f /x")
	c, err := Load(NewViper(), filepath.Join(t.TempDir(), "absent.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Window != 5*time.Minute || len(c.Commands.ConfigTest) != 4 || c.Commands.ConfigTest[3] != "/x" {
		t.Fatalf("env not applied: %+v", c)
	}
}

// policy.must_staple defaults to exempt, takes veto from the file or the environment, and
// rejects anything else by name.
func TestConfigMustStaple(t *testing.T) {
	dir := t.TempDir()
	c, err := Load(NewViper(), filepath.Join(dir, "absent.yaml"), false)
	if err != nil || c.Policy.MustStaple != MustStapleExempt {
		t.Fatalf("default: %v %q", err, c.Policy.MustStaple)
	}
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("policy:\n  must_staple: veto\n"), 0o600)
	if c, err = Load(NewViper(), p, true); err != nil || c.Policy.MustStaple != MustStapleVeto {
		t.Fatalf("file: %v %+v", err, c)
	}
	t.Setenv("STAPLING_AGENT_POLICY_MUST_STAPLE", "ignore")
	if _, err = Load(NewViper(), filepath.Join(dir, "absent.yaml"), false); err == nil || !strings.Contains(err.Error(), "policy.must_staple must be exempt or veto") {
		t.Fatalf("bad value: %v", err)
	}
}

// The fleet keys: defaults (a day's auto-revert, a minute's spread, the pause file and
// node_exporter's usual textfile directory), what the shipped config says, and validation.
func TestConfigFleetKeys(t *testing.T) {
	dir := t.TempDir()
	c, err := Load(NewViper(), filepath.Join(dir, "absent.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.AutoRevertAfter != 24*time.Hour || c.Policy.Spread != time.Minute || c.Policy.PauseFile != "/etc/stapling-agent/pause" ||
		c.Metrics.TextfileDir != "/var/lib/node_exporter/textfile_collector" {
		t.Fatalf("defaults: %+v %+v", c.Policy, c.Metrics)
	}
	data, _ := os.ReadFile("../../packaging/config.yaml")
	p := filepath.Join(dir, "shipped.yaml")
	os.WriteFile(p, data, 0o600)
	if s, err := Load(NewViper(), p, true); err != nil || s.Policy.AutoRevertAfter != c.Policy.AutoRevertAfter || s.Policy.Spread != c.Policy.Spread ||
		s.Policy.PauseFile != c.Policy.PauseFile || s.Metrics.TextfileDir != c.Metrics.TextfileDir {
		t.Fatalf("the shipped config says otherwise than the defaults: %v %+v", err, s)
	}
	p = filepath.Join(dir, "off.yaml")
	os.WriteFile(p, []byte("policy:\n  spread: 0s\n  auto_revert_after: 0s\n  pause_file: \"\"\nmetrics:\n  textfile_dir: \"\"\n"), 0o600)
	if c, err = Load(NewViper(), p, true); err != nil || c.Policy.Spread != 0 || c.Policy.AutoRevertAfter != 0 || c.Policy.PauseFile != "" || c.Metrics.TextfileDir != "" {
		t.Fatalf("turned off: %v %+v", err, c)
	}
	for yaml, want := range map[string]string{
		"policy:\n  spread: -1s\n":                   "policy.spread must not be negative",
		"policy:\n  pause_file: pause\n":             "policy.pause_file must be an absolute path or empty",
		"metrics:\n  textfile_dir: textfile\n":       "metrics.textfile_dir must be an absolute path or empty",
		"metrics:\n  textfile_dir: /x\n  other: 1\n": `unknown key "metrics.other"`,
	} {
		os.WriteFile(p, []byte(yaml), 0o600)
		if _, err := Load(NewViper(), p, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

// Paused: the pause file under root, any kind of file; none configured, absent, or under a
// path that is not a directory is not a pause.
func TestConfigPaused(t *testing.T) {
	root := t.TempDir()
	c, err := Load(NewViper(), filepath.Join(root, "absent.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Paused(root); p != "" {
		t.Fatalf("paused without a file: %q", p)
	}
	os.MkdirAll(filepath.Join(root, "etc/stapling-agent"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/stapling-agent/pause"), nil, 0o644)
	if p := c.Paused(root); p != "/etc/stapling-agent/pause" {
		t.Fatalf("not paused: %q", p)
	}
	os.Remove(filepath.Join(root, "etc/stapling-agent/pause"))
	os.Symlink("/nonexistent", filepath.Join(root, "etc/stapling-agent/pause")) // a dangling link is a file too
	if p := c.Paused(root); p == "" {
		t.Fatal("a dangling symlink is not a pause")
	}
	c.Policy.PauseFile = "/etc/stapling-agent/pause/x" // under a file that is not a directory
	os.Remove(filepath.Join(root, "etc/stapling-agent/pause"))
	os.WriteFile(filepath.Join(root, "etc/stapling-agent/pause"), nil, 0o644)
	if p := c.Paused(root); p != "" {
		t.Fatalf("ENOTDIR is a pause: %q", p)
	}
	c.Policy.PauseFile = ""
	if p := c.Paused(root); p != "" {
		t.Fatalf("no pause file configured, yet paused: %q", p)
	}
}
