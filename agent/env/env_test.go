package env

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/testguard"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

func TestMain(m *testing.M) { os.Exit(testguard.Main(m)) }

// Build is what a reload rebuilds: the runner's timeout, the logger's level and format, the
// state directory and the commands all come from the configuration of the moment.
func TestBuildFollowsTheConfiguration(t *testing.T) {
	root := t.TempDir()
	for p, c := range map[string]string{
		"/etc/cpanel/ea4/is_ea4":                     "",
		"/etc/apache2/conf/httpd.conf":               "",
		"/etc/stapling-agent/config.yaml":            "state_dir: /var/lib/elsewhere\nlog:\n  level: warn\n  format: console\ncommands:\n  timeout: 7s\n  restart: /opt/restart --hard\n",
		"/usr/local/cpanel/scripts/restartsrv_httpd": "",
	} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(c), 0o600)
	}
	var logs bytes.Buffer
	e, err := Build(Flags{Root: root, Stderr: &logs})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := e.Runner.(apacheconf.ExecRunner); !ok || r.Timeout != 7*time.Second {
		t.Fatalf("runner %#v", e.Runner)
	}
	if e.State.Dir != filepath.Join(root, "/var/lib/elsewhere") || e.Layout == nil || e.Layout.Kind != apacheconf.KindEA4 {
		t.Fatalf("state %s layout %+v", e.State.Dir, e.Layout)
	}
	if c := e.Commands(); strings.Join(c.Restart, " ") != filepath.Join(root, "/opt/restart")+" --hard" {
		t.Fatalf("restart %v", c.Restart)
	}
	e.Log.Info().Msg("hidden at warn")
	e.Log.Warn().Msg("shown")
	if out := logs.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "WRN") || strings.HasPrefix(out, "{") {
		t.Fatalf("logger not warn/console: %q", out)
	}

	// A flag beats the file; a bad value is a configuration error; --root must be a directory.
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Duration("command-timeout", 0, "")
	fs.String("log-level", "info", "")
	fs.String("log-format", "", "")
	fs.Parse([]string{"--command-timeout", "3s"})
	if e, err := Build(Flags{Root: root, Set: fs}); err != nil || e.Runner.(apacheconf.ExecRunner).Timeout != 3*time.Second {
		t.Fatalf("flag: %v %#v", err, e)
	}
	fs.Parse([]string{"--log-level", "loud"})
	if _, err := Build(Flags{Root: root, Set: fs}); !errors.Is(err, config.ErrConfig) {
		t.Fatalf("bad level: %v", err)
	}
	if _, err := Build(Flags{Root: filepath.Join(root, "etc/cpanel/ea4/is_ea4")}); !errors.Is(err, ErrRoot) {
		t.Fatalf("bad root: %v", err)
	}
	// No layout is not an error for Build: the audit reports it; RequireLayout says why.
	e, err = Build(Flags{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RequireLayout(); !errors.Is(err, apacheconf.ErrUnknownLayout) {
		t.Fatalf("RequireLayout: %v", err)
	}
}

// A relative --root is made absolute: httpd resolves a relative -f under its -d, so asking it
// with paths built from "lab" asked for lab/etc/apache2/lab/etc/apache2/conf/httpd.conf.
func TestBuildMakesTheRootAbsolute(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "host/etc/apache2/conf"), 0o755)
	t.Chdir(root)
	e, err := Build(Flags{Root: "host", Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "host"); e.Root != want || e.State.Root != want {
		t.Fatalf("root %q, state root %q, want %q", e.Root, e.State.Root, want)
	}
}
