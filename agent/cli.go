// Package agent is stapling-agent's policy and wiring: the command line, configuration, the
// remediation steps and their journal, the audit and the daemon loop. Host knowledge lives in
// apacheconf, log reading in logwatch; this package decides what to do with them.
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
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"golang.org/x/term"

	"github.com/stapling-agent/stapling-agent/apacheconf"
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

// globals are the flags every command shares.
type globals struct {
	flags      *pflag.FlagSet // persistent flags, bound again to a fresh viper on reload
	root       string
	configFile string
	v          *viper.Viper
	stdout     io.Writer
	stderr     io.Writer
}

// env is what a command needs once configuration and layout are settled.
type env struct {
	cfg    *Config
	log    zerolog.Logger
	layout *apacheconf.Layout
	state  *State
	now    func() time.Time
}

// Main runs the command line and returns the process exit code; main() passes it to os.Exit.
func Main(args []string, stdout, stderr io.Writer) int {
	g := &globals{v: newViper(), stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitRefused // usage errors and bad configuration
	var ee *ExitError
	if errors.As(err, &ee) {
		code = ee.Code
		if ee.Err == nil { // the output already said it all (audit status)
			return code
		}
	}
	fmt.Fprintf(stderr, "stapling-agent: error: %s\n", oneLine(err.Error()))
	return code
}

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
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.root, "root", "/", "directory every host path and command is resolved under")
	pf.StringVar(&g.configFile, "config", "", "config file (default "+DefaultConfigFile+" under --root; optional)")
	pf.String("log-level", "info", "log level: debug, info, warn, error")
	pf.String("log-format", "", "log format: json or console (default: console on a terminal, else json)")
	pf.Duration("command-timeout", 120*time.Second, "timeout for each Apache command (config test, rebuild, restart)")
	g.flags = pf
	g.bindFlags()

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
		&cobra.Command{
			Use:    "man DIR",
			Short:  "Write the man pages (section 8) to DIR (used by the package build)",
			Hidden: true,
			Args:   cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				hdr := &doc.GenManHeader{Title: "STAPLING-AGENT", Section: "8", Source: "stapling-agent " + AgentVersion()}
				return doc.GenManTree(cmd.Root(), hdr, args[0])
			},
		},
	)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &ExitError{Code: ExitRefused, Err: err}
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
			e, err := g.setup()
			if err != nil {
				return err
			}
			r := e.remediator(g.stdout)
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
		cmd.Flags().BoolVar(&force, "force", false, "turn stapling off even for vhosts serving Must-Staple certificates")
	}
	return cmd
}

func (g *globals) bindFlags() {
	g.v.BindPFlag("log.level", g.flags.Lookup("log-level"))
	g.v.BindPFlag("log.format", g.flags.Lookup("log-format"))
	g.v.BindPFlag("commands.timeout", g.flags.Lookup("command-timeout"))
}

// reload reads the configuration again from scratch (SIGHUP).
func (g *globals) reload() (*Config, error) {
	g.v = newViper()
	g.bindFlags()
	cfg, _, err := g.settings()
	return cfg, err
}

// settings loads configuration and sets up logging. It creates nothing.
func (g *globals) settings() (*Config, zerolog.Logger, error) {
	file, explicit := g.configFile, g.configFile != ""
	if !explicit {
		file = apacheconf.HostPath(g.root, DefaultConfigFile)
	}
	cfg, err := loadConfig(g.v, file, explicit)
	if err != nil {
		return nil, zerolog.Nop(), err
	}
	log, err := newLogger(g.stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return nil, log, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if info, err := os.Stat(g.root); err != nil || !info.IsDir() {
		return nil, log, fmt.Errorf("--root %s is not a directory", g.root)
	}
	return cfg, log, nil
}

// setup loads settings and detects the layout. It creates nothing.
func (g *globals) setup() (*env, error) {
	cfg, log, err := g.settings()
	if err != nil {
		return nil, &ExitError{Code: ExitRefused, Err: err}
	}
	layout, err := apacheconf.Detect(g.root)
	if err != nil {
		code := ExitRefused
		if !errors.Is(err, apacheconf.ErrUnknownLayout) {
			code = ExitFailed
		}
		return nil, &ExitError{Code: code, Err: err}
	}
	if layout.PathsConfJunk > 0 {
		log.Warn().Int("lines", layout.PathsConfJunk).Msg("ignored lines in paths.conf that are not key=value")
	}
	now := time.Now
	return &env{
		cfg:    cfg,
		log:    log,
		layout: layout,
		state:  &State{Dir: apacheconf.HostPath(g.root, cfg.StateDir), now: now},
		now:    now,
	}, nil
}

func (e *env) commands() apacheconf.Commands {
	c := e.layout.DefaultCommands()
	rooted := func(argv []string) []string {
		out := append([]string(nil), argv...)
		out[0] = apacheconf.HostPath(e.layout.Root, out[0])
		return out
	}
	if len(e.cfg.Commands.ConfigTest) > 0 {
		c.ConfigTest = rooted(e.cfg.Commands.ConfigTest)
	}
	if len(e.cfg.Commands.Restart) > 0 {
		c.Restart = rooted(e.cfg.Commands.Restart)
	}
	if len(e.cfg.Commands.Rebuild) > 0 {
		c.Rebuild = rooted(e.cfg.Commands.Rebuild)
	}
	return c
}

func (e *env) remediator(out io.Writer) *Remediator {
	t := e.cfg.Commands.Timeout
	return &Remediator{
		Layout: e.layout,
		Cmds:   e.commands(),
		Runner: apacheconf.ExecRunner{Timeout: t},
		State:  e.state,
		Log:    e.log,
		Out:    out,
		// The longest another run holds the lock: rebuild, config test and two restarts.
		LockWait: 4*t + 30*time.Second,
		Now:      e.now,
		Verify:   TLSVerifier{Timeout: 10 * time.Second},
	}
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func newAuditCmd(g *globals) *cobra.Command {
	var (
		since          time.Duration
		format, output string
		probe          bool
	)
	// Fleet tooling reads exit codes 0-2 as results; anything that prevents an audit is 3.
	unknown := func(err error) error { return &ExitError{Code: ExitUnknown, Err: err} }
	cmd := &cobra.Command{
		Use:   "audit [--since D] [--format text|json|nagios|prometheus] [--output FILE]",
		Short: "Report stapling failures, config and what the daemon would do; changes nothing",
		Long: `audit reads error_log (the window --since back from now, into rotated files as needed),
the Apache configuration and the pre-VirtualHost include, and replays the daemon's policy.
It never writes Apache files and never runs the config test, rebuild or restart.

Exit codes (Nagios): 0 ok, 1 warning, 2 critical, 3 unknown.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "text", "json", "nagios", "prometheus":
			default:
				return unknown(fmt.Errorf("unknown --format %q: use text, json, nagios or prometheus", format))
			}
			if since <= 0 {
				return unknown(fmt.Errorf("--since must be positive, not %s", since))
			}
			cfg, _, err := g.settings()
			if err != nil {
				return unknown(err)
			}
			layout, lerr := apacheconf.Detect(g.root)
			host, _ := os.Hostname()
			rep := runAudit(auditInput{
				root: g.root, cfg: cfg, layout: layout, layoutEr: lerr,
				state: &State{Dir: apacheconf.HostPath(g.root, cfg.StateDir), now: time.Now},
				now:   time.Now(), since: since, host: host,
			})
			if probe && layout != nil {
				if cfg, err := apacheconf.ReadConfig(layout); err == nil {
					rep.addProbe(runProbe(cmd.Context(), sslTargets(layout, cfg, 0), 5*time.Second))
				}
			}
			var buf bytes.Buffer
			if err := renderAudit(&buf, rep, format); err != nil {
				return unknown(err)
			}
			if output != "" {
				if err := apacheconf.WriteFileAtomic(output, buf.Bytes(), 0o644); err != nil {
					return unknown(err)
				}
			} else if _, err := g.stdout.Write(buf.Bytes()); err != nil {
				return unknown(err)
			}
			if code := statusCode[rep.Status]; code != 0 {
				return &ExitError{Code: code}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "how far back to read error_log")
	cmd.Flags().StringVar(&format, "format", "text", "output: text, json, nagios or prometheus")
	cmd.Flags().StringVar(&output, "output", "", "write the output to FILE atomically instead of stdout")
	cmd.Flags().BoolVar(&probe, "probe", false, "also probe the SSL vhosts and OCSP responders now (see probe)")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return unknown(err) })
	return cmd
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

systemd: Type=notify (READY=1 once following, WATCHDOG=1 while polls complete, STOPPING=1).
SIGTERM/SIGINT stop it (a remediation in progress is finished first); SIGHUP reloads the
configuration and keeps the old one if the new one is bad.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.setup()
			if err != nil {
				return err
			}
			rem := e.remediator(logLines{e.log})
			d := newDaemon(e, rem, dryRun)
			if os.Getenv("NOTIFY_SOCKET") != "" {
				d.notify = func(state string) { sdaemon.SdNotify(false, state) }
			}
			return d.Run(cmd.Context(), g.reload)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "log what would be done, touch nothing (overrides mode)")
	return cmd
}

// logLines turns the remediation's human report into log lines (the daemon has no stdout
// reader).
type logLines struct{ log zerolog.Logger }

func (l logLines) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		l.log.Info().Msg(line)
	}
	return len(p), nil
}

func newProbeCmd(g *globals) *cobra.Command {
	var (
		targets    []string
		servername string
		format     string
		timeout    time.Duration
	)
	unknown := func(err error) error { return &ExitError{Code: ExitUnknown, Err: err} }
	cmd := &cobra.Command{
		Use:   "probe [--target HOST:PORT] [--servername NAME] [--format text|json] [--timeout D]",
		Short: "Show what a client sees on 443 and whether the OCSP responders answer from this host",
		Long: `probe handshakes with every SSL vhost of the Apache config (or --target): each of TLS 1.0,
1.1, 1.2 and 1.3 offered alone (accepted, alert, reset, timeout), the default offer's version,
cipher and time, the staple and its status, the presented certificate (Must-Staple, whether it
is the configured one, chain verification), and sends a real OCSP request over plain HTTP to
each responder of the configured certificates, as mod_ssl would.

Exit codes: 0 every target handshakes and every responder answers; 1 otherwise; 3 nothing
could be probed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return unknown(fmt.Errorf("unknown --format %q: use text or json", format))
			}
			var tg []probeTarget
			if len(targets) > 0 {
				for _, t := range targets {
					tg = append(tg, probeTarget{address: t, servername: servername})
				}
			} else {
				if _, _, err := g.settings(); err != nil {
					return unknown(err)
				}
				l, err := apacheconf.Detect(g.root)
				if err != nil {
					return unknown(err)
				}
				cfg, err := apacheconf.ReadConfig(l)
				if err != nil {
					return unknown(fmt.Errorf("read Apache config: %w", err))
				}
				tg = sslTargets(l, cfg, 0)
			}
			rep := runProbe(cmd.Context(), tg, timeout)
			if format == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				enc.Encode(rep)
			} else {
				renderProbeText(g.stdout, rep)
			}
			if code := probeExit(rep); code != 0 {
				if code == ExitUnknown {
					return unknown(errors.New("nothing to probe: no SSL vhost found and no --target given"))
				}
				return &ExitError{Code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&targets, "target", nil, "HOST:PORT to probe instead of the configured SSL vhosts (repeatable)")
	cmd.Flags().StringVar(&servername, "servername", "", "SNI name for --target")
	cmd.Flags().StringVar(&format, "format", "text", "output: text or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "timeout for each handshake and OCSP request")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return unknown(err) })
	return cmd
}
