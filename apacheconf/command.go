package apacheconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
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
	started := time.Now()
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
		if unit, ok := startedUnit(argv); ok {
			out.Write(unitLog(unit, started))
		}
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
// On a real host (root "/") with systemd as PID 1, the restart and the rebuild run through
// PID 1, so Apache never inherits the agent's sandbox or cgroup (FACTS.md section 8: it would
// inherit NoNewPrivileges, breaking suexec, and die with our unit), and rebuildhttpdconf can
// write httpd.conf (read-only inside the sandbox). Which way PID 1 is asked is ThroughPID1's
// answer for this host.
func (l *Layout) DefaultCommands() Commands {
	way := ThroughNothing
	if systemdBooted() {
		way = ThroughPID1()
	}
	return l.defaultCommands(way)
}

// Through is how a command reaches PID 1.
type Through string

const (
	// ThroughNothing: no systemd as PID 1 (or another --root): the command runs directly.
	ThroughNothing Through = "direct"
	// ThroughSystemdRun: a transient service, `systemd-run --wait --collect --quiet --pipe`;
	// the command's output comes back on the pipe. Needs systemd 236 (FACTS.md section 15:
	// --wait 232, --pipe 235, --collect 236).
	ThroughSystemdRun Through = "systemd-run"
	// ThroughUnit: `systemctl start` of a oneshot unit the package ships
	// (stapling-agent-restart.service, stapling-agent-rebuild.service), which waits for the
	// oneshot to finish on every systemd version, EL7's 219 included. Its output goes to the
	// journal; ExecRunner brings the unit's last lines back into the error.
	ThroughUnit Through = "unit"
)

// ThroughEnv overrides ThroughPID1's choice: "systemd-run" or "unit" (the systemd bed tests the
// oneshot path on a systemd that has systemd-run; an operator may prefer one path). Not a
// configuration key: it is about the host, not the policy.
const ThroughEnv = "STAPLING_AGENT_THROUGH_PID1"

// oneshotUnits are the package's units for the commands it knows (packaging/systemd). A
// command without one (EA3's /scripts/restartsrv_httpd, which no systemd host has without
// the /usr/local/cpanel one) runs directly on the oneshot path, as before it existed.
var oneshotUnits = map[string]string{
	restartPrimary: "stapling-agent-restart.service",
	rebuildScript:  "stapling-agent-rebuild.service",
}

// ThroughPID1 is how this host's PID 1 runs our commands: ThroughEnv when set, else systemd-run
// when `systemd-run --version` says 236 or later, else the oneshot units. Asked once per
// process: systemd is not upgraded under a running agent without restarting it.
func ThroughPID1() Through {
	throughPID1.once.Do(func() {
		switch Through(os.Getenv(ThroughEnv)) {
		case ThroughSystemdRun:
			throughPID1.way = ThroughSystemdRun
		case ThroughUnit:
			throughPID1.way = ThroughUnit
		default:
			throughPID1.way = ThroughUnit
			if v, err := systemdRunVersion(); err == nil && v >= 236 {
				throughPID1.way = ThroughSystemdRun
			}
		}
	})
	return throughPID1.way
}

var throughPID1 struct {
	once sync.Once
	way  Through
}

// systemdRunVersion runs `systemd-run --version`: "systemd 252 (252.39-1~deb12u2)" first.
func systemdRunVersion() (int, error) {
	out, err := ExecRunner{Timeout: 5 * time.Second}.Run(context.Background(), []string{"systemd-run", "--version"})
	if err != nil {
		return 0, err
	}
	return parseSystemdVersion(out)
}

func parseSystemdVersion(out []byte) (int, error) {
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "systemd" {
		return 0, fmt.Errorf("systemd-run --version: unexpected %q", firstLine(out))
	}
	v, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("systemd-run --version: unexpected %q", firstLine(out))
	}
	return v, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// defaultCommands is DefaultCommands with the way through PID 1 given, so every path is tested.
func (l *Layout) defaultCommands(way Through) Commands {
	c := Commands{
		ConfigTest: []string{l.Path(l.Apachectl), "-t"},
		Restart:    []string{l.Path(l.Restart)},
	}
	if l.Rebuild != "" {
		c.Rebuild = []string{l.Path(l.Rebuild)}
	}
	if l.Root != "/" && l.Root != "" {
		return c
	}
	through := func(argv []string) []string {
		switch way {
		case ThroughSystemdRun:
			return ViaSystemd(argv)
		case ThroughUnit:
			if unit, ok := oneshotUnits[argv[0]]; ok {
				return ViaUnit(unit)
			}
		}
		return argv
	}
	c.Restart = through(c.Restart)
	if len(c.Rebuild) > 0 {
		c.Rebuild = through(c.Rebuild)
	}
	return c
}

// ViaSystemd wraps argv so PID 1 runs it as a transient service and we wait for its result.
func ViaSystemd(argv []string) []string {
	return append([]string{"systemd-run", "--wait", "--collect", "--quiet", "--pipe", "--"}, argv...)
}

// ViaUnit is the argv that has PID 1 run a oneshot unit and waits for its result.
func ViaUnit(unit string) []string { return []string{"systemctl", "start", unit} }

// startedUnit is the unit of a ViaUnit argv.
func startedUnit(argv []string) (string, bool) {
	if len(argv) == 3 && argv[0] == "systemctl" && argv[1] == "start" {
		return argv[2], true
	}
	return "", false
}

// unitLog is what the unit's processes logged since a command started it: what
// restartsrv_httpd printed before it failed, which `systemctl start` itself never shows ("Job
// for ... failed ... See journalctl"). _SYSTEMD_UNIT= (not -u) leaves out the manager's own
// lines about the unit; --since has whole seconds (EL7's journalctl has no invocation ids),
// so a run that ended in the same second may show too. Bounded: the last 20 lines, 5 s.
// Journald reads the unit's output stream on its own time, so an empty answer is asked again
// once.
func unitLog(unit string, since time.Time) []byte {
	argv := []string{"journalctl", "--no-pager", "--quiet", "-o", "cat", "-n", "20", "_SYSTEMD_UNIT=" + unit,
		"--since", since.Truncate(time.Second).Format("2006-01-02 15:04:05")}
	for try := 0; try < 2; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cmd := newCommand(ctx, argv)
		out, err := cmd.Output()
		cancel()
		if err == nil && len(bytes.TrimSpace(out)) > 0 {
			return append([]byte("\n"+unit+" logged:\n"), out...)
		}
		time.Sleep(300 * time.Millisecond)
	}
	return nil
}

// systemdBooted is sd_booted(3): /run/systemd/system exists only when systemd is PID 1.
func systemdBooted() bool {
	info, err := os.Stat("/run/systemd/system")
	return err == nil && info.IsDir()
}
