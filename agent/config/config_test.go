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
