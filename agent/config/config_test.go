package config

import (
	"os"
	"path/filepath"
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
