// Package agent is stapling-agent's command line: cobra wiring over the packages below it,
// and the one place errors become exit codes. Each concern has its own package:
//
//	env        the one setup path: flags, configuration, logger, layout, runner, state
//	config     configuration keys, defaults, validation
//	policy     the pure decision shared by the daemon and the audit
//	state      the state directory: lock, journal, backups; the policy's memory
//	probe      TLS handshakes, OCSP requests, certificate facts (Must-Staple)
//	remediate  the transaction that changes the include, and Assess (host facts)
//	audit      the read-only report and its renderers
//	daemon     the event loop and its worker
//	escape     untrusted text made safe for output
//
// Host knowledge lives in apacheconf, log reading in logwatch.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/stapling-agent/stapling-agent/agent/audit"
	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/daemon"
	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/escape"
	"github.com/stapling-agent/stapling-agent/agent/frontend"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/remediate"
	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

// Version is set at build time with -ldflags "-X .../agent.Version=1.2.3".
var Version = ""

// AgentVersion is Version, else the module version from the build info, else "devel".
func AgentVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}

// Exit codes. remediate, revert, run and config check: 0 done or nothing to do, 1 failed (and
// rolled back), 2 refused or bad usage/configuration. audit and probe follow Nagios: anything
// that prevents them is 3.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitRefused = 2
	ExitUnknown = 3
)

// exitError gives an error its exit code; a nil Err means the output already said it all
// (an audit's status).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// exitCode maps an error to the process exit code.
func exitCode(err error) int {
	var ee *exitError
	var re *remediate.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &re) && re.Outcome == remediate.Refused:
		return ExitRefused
	case errors.As(err, &re):
		return ExitFailed
	case errors.Is(err, config.ErrConfig), errors.Is(err, env.ErrRoot), errors.Is(err, apacheconf.ErrUnknownLayout):
		return ExitRefused
	}
	return ExitFailed
}

// Main runs the command line and returns the process exit code; main() passes it to os.Exit.
func Main(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr, args: args}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err != nil && !g.ran {
		err = usageError(g, root, err)
	}
	code := exitCode(err)
	var ee *exitError
	if err != nil && !(errors.As(err, &ee) && ee.err == nil) {
		fmt.Fprintf(stderr, "stapling-agent: error: %s\n", escape.Line(err.Error()))
	}
	return code
}

// globals are the flags every command shares.
type globals struct {
	flags  env.Flags
	stdout io.Writer
	stderr io.Writer
	// args is the command line as given: the audit finds --format nagios in it when a flag
	// error stopped the parsing before that flag was read.
	args []string
	// ran is set once cobra has parsed the command line and is about to run a command: an
	// error before that is a usage error (flags, arguments, unknown command).
	ran bool
}

// usageError is what a usage error (one before any command ran) exits with: 2, bad usage, as
// for the other commands; 3 with one "STAPLING UNKNOWN - reason" line on stdout when the
// command line asks for Nagios output, wherever the error is (a root flag before the
// subcommand, an unknown command, a subcommand's flags or arguments): Nagios reads 2 as
// CRITICAL, and an empty output as a broken plugin. For the audit and the probe in any format
// it is 3 too (anything that prevents a check is unknown; the audit's 2 means critical).
func usageError(g *globals, root *cobra.Command, err error) error {
	if nagios, hint := auditWantsNagios(g.args); nagios {
		_ = audit.RenderNagiosUnknown(g.stdout, err.Error()+hint)
		return &exitError{code: ExitUnknown, err: err}
	}
	if w := commandWord(root, g.args); w == "audit" || w == "probe" {
		return &exitError{code: ExitUnknown, err: err}
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: ExitRefused, err: err}
}

// commandWord is the subcommand a command line names: its first word that is not a flag or a
// root flag's value. (cobra's Find takes the word after an unknown flag for that flag's value.)
func commandWord(root *cobra.Command, args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return ""
		}
		if !strings.HasPrefix(a, "-") {
			return a
		}
		if strings.Contains(a, "=") {
			continue
		}
		name := strings.TrimLeft(a, "-")
		f := root.PersistentFlags().Lookup(name)
		if f == nil && len(name) == 1 {
			f = root.PersistentFlags().ShorthandLookup(name)
		}
		if f != nil && f.NoOptDefVal == "" {
			i++ // its value
		}
	}
	return ""
}

// env is the one setup path of every command.
func (g *globals) env() (*env.Env, error) { return env.Build(g.flags) }

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "stapling-agent",
		Short: "Keep HTTPS up on cPanel hosts when OCSP stapling breaks",
		Long: `stapling-agent watches Apache's error_log on cPanel/WHM hosts for mod_ssl OCSP stapling
failures (AH01941 after an unreachable responder), and turns stapling off safely in the
pre-VirtualHost include: written atomically, config-tested, Apache restarted with
restartsrv_httpd, and rolled back byte for byte if anything fails.

Exit codes: 0 done or nothing to do; 1 failed (and rolled back); 2 refused (unknown layout,
include not wired, bad configuration or usage); audit: 0 ok, 1 warning, 2 critical, 3 unknown.`,
		Version:       AgentVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every command's, as no subcommand has its own: past the parsing (usageError).
		PersistentPreRun: func(*cobra.Command, []string) { g.ran = true },
	}
	// -V/--version as the audit has it (the plugin guidelines' spelling), "stapling-agent
	// VERSION" as the version command prints it.
	root.Flags().BoolP("version", "V", false, "print the version")
	root.SetVersionTemplate("stapling-agent {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVar(&g.flags.Root, "root", "/", "directory every host path and command is resolved under")
	pf.StringVar(&g.flags.ConfigFile, "config", "", "config file (default "+config.DefaultConfigFile+" under --root; optional)")
	pf.String("log-level", "info", "log level: debug, info, warn, error")
	pf.String("log-format", "", "log format: json or console (default: console on a terminal, else json)")
	pf.Duration("command-timeout", 120*time.Second, "timeout for each Apache command (config test, rebuild, restart)")
	g.flags.Set, g.flags.Stderr = pf, g.stderr

	root.AddCommand(
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				fmt.Fprintf(g.stdout, "stapling-agent %s\n", AgentVersion())
				return nil
			},
		},
		newChangeCmd(g, "remediate", "Turn OCSP stapling off in the pre-VirtualHost include, config-test and restart Apache"),
		newChangeCmd(g, "revert", "Remove stapling-agent's block from the include, config-test and restart Apache"),
		newAuditCmd(g),
		newRunCmd(g),
		newProbeCmd(g),
		newConfigCmd(g),
		newManCmd(),
	)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: ExitRefused, err: err}
	})
	return root
}

func newChangeCmd(g *globals, action, short string) *cobra.Command {
	var dryRun, force bool
	cmd := &cobra.Command{
		Use:   action,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env()
			if err != nil {
				return err
			}
			// As the daemon does: httpd's answers drive the reading, and a reading they
			// contradict is refused.
			if e.Layout != nil {
				if err := e.AskApache(cmd.Context()); err != nil {
					fmt.Fprintf(g.stderr, "%s: could not ask httpd (%v); reading the config with the defaults\n", action, err)
				}
			}
			r, err := remediate.New(e, g.stdout)
			if err != nil {
				return err
			}
			r.Force = force
			if action == "remediate" {
				_, err = r.Remediate(cmd.Context(), dryRun)
			} else {
				_, err = r.Revert(cmd.Context(), dryRun)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the exact change and commands, touch nothing")
	if action == "remediate" {
		cmd.Flags().BoolVar(&force, "force", false, "turn stapling off even for Must-Staple vhosts that cannot be exempted (policy.must_staple veto: for all of them)")
	}
	return cmd
}

// frontEndTargets are the public HTTPS listeners when another server answers there instead
// of Apache, and the role of Apache's own vhost addresses then: NGINX's SSL servers from its
// config (first listen address, first plain server_name), with Apache's vhosts its backend.
// LiteSpeed serves Apache's vhost addresses itself (it reads Apache's config), so those are
// the front end; behind another server only Apache's backend is known.
func frontEndTargets(ctx context.Context, l *apacheconf.Layout) (front []probe.Target, apacheRole string, err error) {
	fe, err := frontend.Detect(ctx, l.Root, nil)
	switch {
	case err != nil || fe == nil || fe.Server == frontend.ServerApache || fe.Server == frontend.ServerUnknown:
		return nil, "", err
	case fe.Server == frontend.ServerLiteSpeed:
		return nil, "frontend (litespeed)", nil
	case fe.Server != frontend.ServerNginx:
		return nil, "backend", nil
	}
	cfg, err := frontend.ReadNginxConfig(ctx, l.Root, "")
	if err != nil {
		return nil, "backend", fmt.Errorf("NGINX answers on the HTTPS port, but its config cannot be read: %w", err)
	}
	seen := map[string]bool{}
	for _, s := range cfg.Servers {
		if !s.SSL || len(s.Listen) == 0 {
			continue
		}
		words := strings.Fields(s.Listen[0])
		if len(words) == 0 {
			continue
		}
		addr := words[0]
		if _, err := strconv.Atoi(addr); err == nil {
			addr = "*:" + addr // `listen 443 ssl`: every address
		}
		t := probe.Target{Address: probe.TargetAddress(addr), Role: "frontend"}
		for _, n := range s.Names {
			if n != "" && n != "_" && !strings.ContainsAny(n, "*~") {
				t.ServerName = n
				break
			}
		}
		if len(s.Certificates) > 0 {
			t.Configured, _ = probe.LoadCertFile(l.Path(s.Certificates[0]))
		}
		if k := t.Address + "|" + t.ServerName; !seen[k] {
			seen[k] = true
			front = append(front, t)
		}
	}
	return front, "backend", nil
}

// auditMemoryLimit is the audit's soft memory limit (runtime/debug.SetMemoryLimit).
const auditMemoryLimit = 48 << 20

func newAuditCmd(g *globals) *cobra.Command {
	var (
		since          time.Duration
		timeout        pluginTimeout
		format, output string
		withProbe      bool
		noExec         bool
	)
	// Fleet tooling reads exit codes 0-2 as results; anything that prevents an audit is 3,
	// usage and flag errors included (a Nagios plugin's usage error is UNKNOWN, not the
	// CRITICAL a 2 would page for). For Nagios the reason is also the one line on stdout,
	// where the plugin's output goes (stderr stays for people); Main's usageError writes it for
	// the errors before the audit runs (flags, arguments).
	unknown := func(err error) error {
		if nagios, hint := auditWantsNagios(g.args); nagios && g.ran {
			_ = audit.RenderNagiosUnknown(g.stdout, err.Error()+hint)
		}
		return &exitError{code: ExitUnknown, err: err}
	}
	cmd := &cobra.Command{
		Use:   "audit [--since D] [--format text|json|nagios|prometheus] [--output FILE] [-t TIMEOUT]",
		Short: "Report stapling failures, config and what the daemon would do; changes nothing",
		Long: `audit reads error_log (the window --since back from now, into rotated files as needed),
the Apache configuration and the pre-VirtualHost include, and asks the daemon's policy what it
would decide now, on the same inputs. It never writes Apache files and never runs the config
test, rebuild or restart.

With --format nagios it is a Nagios plugin: the first line's perfdata is status (0 ok, 1
warning, 2 critical; warn 0, crit 1, so its thresholds give the exit code; U when unknown) and
the counts failures, max_in_window and after_remediation, for graphs, without thresholds (U
when the error log could not be read). Usage and flag errors exit 3 with one "STAPLING
UNKNOWN - reason" line on stdout. -t/--timeout takes seconds (-t 10) or a duration (8s).

Exit codes (Nagios): 0 ok, 1 warning, 2 critical, 3 unknown (also for usage errors).`,
		Version: AgentVersion(),
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknown(fmt.Errorf("audit takes no arguments, not %q (flags start with --, e.g. --format nagios)", args[0]))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := audit.ParseFormat(format)
			if err != nil {
				return unknown(err)
			}
			if since <= 0 {
				return unknown(fmt.Errorf("--since must be positive, not %s", since))
			}
			e, err := g.env()
			if err != nil {
				return unknown(err)
			}
			host, _ := os.Hostname()
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout))
				defer cancel()
			}
			// A one-shot reading of a 20 MB config allocates far more than it keeps (about
			// 26 MB live at its peak on a 3,000-account host): a soft limit makes the
			// collector run before the heap doubles, keeping the timer's peak RSS near 54
			// MiB instead of 60-66, at no cost in time (scripts/bench-config.sh).
			// GOMEMLIMIT, when set, wins.
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(auditMemoryLimit)
			}
			rep := audit.Run(ctx, e, audit.Options{NoExec: noExec, Since: since, Host: host, Probe: withProbe, ProbeTimeout: 5 * time.Second, Version: AgentVersion()})
			var buf bytes.Buffer
			if err := audit.Render(&buf, rep, f); err != nil {
				return unknown(err)
			}
			if output != "" {
				// Never through a symlinked directory: the file is replaced as root.
				abs, _ := filepath.Abs(output)
				if err := apacheconf.NoSymlinkBelow("/", filepath.Dir(abs)); err != nil {
					return unknown(fmt.Errorf("--output: %w", err))
				}
				if err := apacheconf.WriteFileAtomic(output, buf.Bytes(), 0o644); err != nil {
					return unknown(err)
				}
			} else if _, err := g.stdout.Write(buf.Bytes()); err != nil {
				return unknown(err)
			}
			if code := rep.Status.Code(); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "how far back to read error_log")
	cmd.Flags().StringVar(&format, "format", string(audit.Text), "output: text, json, nagios or prometheus")
	cmd.Flags().StringVar(&output, "output", "", "write the output to FILE atomically instead of stdout")
	cmd.Flags().BoolVar(&withProbe, "probe", false, "also probe the SSL vhosts and OCSP responders now (see probe)")
	cmd.Flags().BoolVar(&noExec, "no-exec", false, "do not ask httpd (-v, -l, -M, -S, and -t -D DUMP_CONFIG where mod_info is loaded); the report says what could not be checked")
	cmd.Flags().VarP(&timeout, "timeout", "t", "give up (status unknown, exit 3) after this long: seconds (10) or a duration (8s); 0: no limit (SIGTERM always stops it within 2 s)")
	cmd.Flags().BoolP("version", "V", false, "print the version and exit 0")
	cmd.SetVersionTemplate("stapling-agent {{.Version}}\n")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return unknown(err) })
	return cmd
}

// auditWantsNagios says whether the audit's command line asks for Nagios output: the last
// --format given is nagios (read here because a flag error stops the parsing before later
// flags are read), or the value of --format is not a format at all (a typo in a Nagios
// command definition; no other reader gets anything it can parse either way), or the one
// argument is "nagios" (--format forgotten). hint is what to add to the reason then.
func auditWantsNagios(args []string) (nagios bool, hint string) {
	format := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return format == string(audit.Nagios), ""
		case a == "--format" && i+1 < len(args):
			format = args[i+1]
			i++
		case strings.HasPrefix(a, "--format="):
			format = strings.TrimPrefix(a, "--format=")
		case a == string(audit.Nagios) && i > 0 && args[i-1] == "audit" && format == "":
			return true, "; did you mean --format nagios?"
		}
	}
	if format == "" {
		return false, ""
	}
	_, err := audit.ParseFormat(format)
	return format == string(audit.Nagios) || err != nil, ""
}

// pluginTimeout is the audit's -t/--timeout: the plugin guidelines' whole seconds (-t 10), or
// a Go duration (--timeout 8s, as the sudoers drop-in and the README's NRPE example pin it).
type pluginTimeout time.Duration

func (p *pluginTimeout) String() string { return time.Duration(*p).String() }
func (p *pluginTimeout) Type() string   { return "duration" }
func (p *pluginTimeout) Set(s string) error {
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		*p = pluginTimeout(time.Duration(n) * time.Second)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("want seconds (10) or a duration (8s), not %q", s)
	}
	*p = pluginTimeout(d)
	return nil
}

func newRunCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "run [--dry-run]",
		Short: "Follow error_log and remediate when the policy says so (what systemd runs)",
		Long: `run follows the layout's error_log through cpanellogd's rotations, counts OCSP responder
failures (AH01941; never forged, certificate-status or start-up lines) and, when
policy.threshold of them fall within policy.window, runs exactly what "remediate" runs. After
acting it holds off for policy.cooldown, acts at most policy.max_per_day times a day, and
never restarts Apache while stapling is already off. In dry-run mode (--dry-run, or
"mode: dry-run") it logs what it would do, once per cooldown, and touches nothing.

systemd: Type=notify (READY=1 once following, WATCHDOG=1 while reading, STOPPING=1).
SIGTERM/SIGINT stop it (a remediation in progress is finished first); SIGHUP rebuilds
everything the configuration drives and keeps the old configuration if the new one is bad.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Signal handlers first: READY=1 promises that SIGHUP and SIGTERM are handled.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			e, err := g.env()
			if err != nil {
				return err
			}
			d, err := daemon.New(e, dryRun, g.env)
			if err != nil {
				return err
			}
			if os.Getenv("NOTIFY_SOCKET") != "" {
				d.Notify = func(s string) { sdaemon.SdNotify(false, s) }
			}
			ticks, stop := realTicks(e, d.LogFile())
			defer stop()
			return d.Run(cmd.Context(), ticks, hup)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "log what would be done, touch nothing (overrides mode)")
	return cmd
}

// realTicks are the daemon's tickers: the poll, inotify wake-ups when available (polling
// stays the truth and the fallback), the watchdog at a quarter of WatchdogSec (so one late
// tick never lets half of it pass without a ping), and the auto-revert check.
func realTicks(e *env.Env, logFile string) (daemon.Ticks, func()) {
	poll := time.NewTicker(logwatch.PollInterval)
	revert := time.NewTicker(daemon.AutoRevertEvery)
	refresh := time.NewTicker(daemon.RefreshEvery)
	stops := []func(){poll.Stop, revert.Stop, refresh.Stop}
	t := daemon.Ticks{Poll: poll.C, Revert: revert.C, Refresh: refresh.C}
	if w, err := logwatch.NewWaker(logFile); err == nil {
		t.Wake = w.C()
		stops = append(stops, func() { _ = w.Close() }) // at exit: nothing left to tell
	} else {
		e.Log.Warn().Err(err).Msg("no inotify wake-ups; polling only")
	}
	if every, err := sdaemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		wd := time.NewTicker(every / 4)
		t.Watchdog = wd.C
		stops = append(stops, wd.Stop)
	}
	return t, func() {
		for _, s := range stops {
			s()
		}
	}
}

func newProbeCmd(g *globals) *cobra.Command {
	var (
		targets    []string
		servername string
		format     string
		timeout    time.Duration
		deadline   time.Duration
	)
	var concurrency int
	unknown := func(err error) error { return &exitError{code: ExitUnknown, err: err} }
	cmd := &cobra.Command{
		Use:   "probe [--target HOST:PORT] [--servername NAME] [--format text|json] [--timeout D] [--deadline D] [--concurrency N]",
		Short: "Show what a client sees on 443 and whether the OCSP responders answer from this host",
		Long: `probe handshakes with every SSL vhost of the Apache config (or --target): each of TLS 1.0,
1.1, 1.2 and 1.3 offered alone (accepted, alert, reset, timeout), the default offer's version,
cipher and time, the staple and its status, the presented certificate (Must-Staple, whether it
is the configured one, chain verification), and sends a real OCSP request over plain HTTP to
each responder of the configured certificates, as mod_ssl would.

--concurrency targets are probed at once, each one connection at a time. A target that
cannot be connected to, stalls or drops the connection is tried once (status unreachable,
stalled, closed), not once per protocol. Vhosts with the same address, SNI name and
certificate are probed once and each is reported (shared_with). At --deadline the probe
stops: every target not finished is reported with status not_probed, and the report says
incomplete.

Exit codes: 0 every target handshakes and every responder answers; 1 otherwise, and when
--deadline or a signal stopped the probe; 3 nothing could be probed, or bad usage.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return unknown(fmt.Errorf("unknown --format %q: use text or json", format))
			}
			if concurrency < 1 {
				return unknown(fmt.Errorf("--concurrency %d: must be at least 1 (targets probed at once)", concurrency))
			}
			if deadline <= 0 {
				return unknown(fmt.Errorf("--deadline %s: must be more than 0", deadline))
			}
			if timeout <= 0 {
				return unknown(fmt.Errorf("--timeout %s: must be more than 0", timeout))
			}
			var tg []probe.Target
			if len(targets) > 0 {
				for _, t := range targets {
					tg = append(tg, probe.Target{Address: t, ServerName: servername})
				}
			} else {
				e, err := g.env()
				if err != nil {
					return unknown(err)
				}
				l, err := e.RequireLayout()
				if err != nil {
					return unknown(err)
				}
				cfg, err := apacheconf.ReadConfig(l)
				if err != nil {
					return unknown(fmt.Errorf("read Apache config: %w", err))
				}
				tg = probe.Targets(l, cfg, 0)
				// Behind another server, what visitors reach is the front end: probed first,
				// and Apache's vhosts separately as its backend.
				front, role, err := frontEndTargets(cmd.Context(), l)
				if err != nil {
					return unknown(err)
				}
				for i := range tg {
					tg[i].Role = role
				}
				tg = append(front, tg...)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			rep := probe.RunWith(ctx, tg, probe.Options{Timeout: timeout, Concurrency: concurrency})
			n, nr := 0, 0
			for _, t := range rep.Targets {
				if t.Status == probe.StatusNotProbed {
					n++
				}
			}
			for _, r := range rep.Responders {
				if r.NotProbed {
					nr++
				}
			}
			// Incomplete only when something was cut short: a deadline passing just after
			// the last answer leaves a complete report.
			if n > 0 || nr > 0 {
				why := fmt.Sprintf("stopped after --deadline %s", deadline)
				if cmd.Context().Err() != nil {
					why = "stopped by a signal"
				}
				rep.Incomplete = fmt.Sprintf("%s; %d of %d targets and %d of %d responders not probed (not_probed)", why, n, len(rep.Targets), nr, len(rep.Responders))
			}
			if format == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return unknown(err)
				}
			} else {
				probe.RenderText(g.stdout, rep)
			}
			switch {
			case rep.Empty():
				return unknown(errors.New("nothing to probe: no SSL vhost found and no --target given"))
			case !rep.Healthy():
				return &exitError{code: ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&targets, "target", nil, "HOST:PORT to probe instead of the configured SSL vhosts (repeatable)")
	cmd.Flags().StringVar(&servername, "servername", "", "SNI name for --target")
	cmd.Flags().StringVar(&format, "format", "text", "output: text or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "timeout for each handshake and OCSP request")
	cmd.Flags().DurationVar(&deadline, "deadline", 2*time.Minute, "stop the whole probe after this long and report what is not probed (SIGTERM stops it at once)")
	cmd.Flags().IntVar(&concurrency, "concurrency", probe.DefaultConcurrency(), "targets probed at once, one connection each (default: 4 a core, at least 4)")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return unknown(err) })
	return cmd
}

func newConfigCmd(g *globals) *cobra.Command {
	cfg := &cobra.Command{
		Use:   "config",
		Short: "Work with the configuration",
		Args:  cobra.NoArgs,
	}
	cfg.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Check the configuration file, environment and flags; exit 0 valid, 2 invalid",
		Long: `config check loads the configuration exactly as every command does (file, STAPLING_AGENT_*
environment, flags) and validates it, changing nothing. The systemd unit runs it before
sending SIGHUP, so "systemctl reload stapling-agent" fails, and the daemon keeps its old
configuration, when the new file is bad.

Exit codes: 0 valid; 2 invalid, with the reason on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env()
			if err != nil {
				return err
			}
			c := e.Config
			fmt.Fprintf(g.stdout, "configuration valid: mode %s, policy %d failures in %s, cooldown %s, max %d a day, state_dir %s\n",
				c.Mode, c.Policy.Threshold, c.Policy.Window, c.Policy.Cooldown, c.Policy.MaxPerDay, c.StateDir)
			return nil
		},
	})
	return cfg
}
