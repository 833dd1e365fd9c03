package apacheconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Runner runs a command without a shell and returns its combined output. It is the one place
// the agent executes anything, so policy tests can record calls and the e2e tests run the real
// scripts.
type Runner interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// CmdError is a failed command with what it printed, like mkcert's fatalIfCmdErr.
type CmdError struct {
	Argv   []string
	Output []byte
	Err    error
}

func (e *CmdError) Error() string {
	out := strings.Join(strings.Fields(string(e.Output)), " ")
	const max = 600 // keep the one-line error readable; the journal keeps this much too
	if len(out) > max {
		out = "..." + out[len(out)-max:]
	}
	if out == "" {
		return fmt.Sprintf("%s: %v", strings.Join(e.Argv, " "), e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Argv, " "), e.Err, out)
}

func (e *CmdError) Unwrap() error { return e.Err }

// ExecRunner runs commands directly with a timeout.
type ExecRunner struct {
	Timeout time.Duration
}

func (r ExecRunner) Run(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	cmd := newCommand(ctx, argv)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// Keep the cause: callers tell a timeout from a failure with errors.Is.
		err = fmt.Errorf("timed out after %s: %w", r.Timeout, context.DeadlineExceeded)
	}
	if err != nil {
		return out.Bytes(), &CmdError{Argv: argv, Output: out.Bytes(), Err: err}
	}
	return out.Bytes(), nil
}

// newCommand is argv in its own process group, killed whole when ctx ends: a restart script
// forks children that would otherwise keep our pipes open. WaitDelay bounds the wait for those
// pipes.
func newCommand(ctx context.Context, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = processGroup()
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Commands are the argv of the three Apache operations, already resolved under the root.
type Commands struct {
	ConfigTest []string
	Restart    []string
	Rebuild    []string // empty on EA3
}

// DefaultCommands are cPanel's: `<apachectl> -t`, restartsrv_httpd with no argument (a
// graceful restart with a hard fallback) and rebuildhttpdconf (EA4; it does not restart).
//
// On a real host (root "/") with systemd as PID 1, the restart runs through PID 1 with
// systemd-run, so Apache never inherits the agent's sandbox or cgroup (FACTS.md section 8: it
// would inherit NoNewPrivileges, breaking suexec, and die with our unit).
func (l *Layout) DefaultCommands() Commands { return l.defaultCommands(systemdBooted()) }

// defaultCommands is DefaultCommands with sd_booted(3)'s answer given, so both paths are tested.
func (l *Layout) defaultCommands(booted bool) Commands {
	c := Commands{
		ConfigTest: []string{l.Path(l.Apachectl), "-t"},
		Restart:    []string{l.Path(l.Restart)},
	}
	if l.Rebuild != "" {
		c.Rebuild = []string{l.Path(l.Rebuild)}
	}
	if (l.Root == "/" || l.Root == "") && booted {
		c.Restart = ViaSystemd(c.Restart)
		if len(c.Rebuild) > 0 {
			// rebuildhttpdconf writes httpd.conf, read-only inside the agent's sandbox.
			c.Rebuild = ViaSystemd(c.Rebuild)
		}
	}
	return c
}

// ViaSystemd wraps argv so PID 1 runs it as a transient service and we wait for its result.
func ViaSystemd(argv []string) []string {
	return append([]string{"systemd-run", "--wait", "--collect", "--quiet", "--pipe", "--"}, argv...)
}

// systemdBooted is sd_booted(3): /run/systemd/system exists only when systemd is PID 1.
func systemdBooted() bool {
	info, err := os.Stat("/run/systemd/system")
	return err == nil && info.IsDir()
}
