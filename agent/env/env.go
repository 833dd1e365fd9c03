// Package env builds what every command works with from the flags and the configuration: the
// settings, the logger, the host's layout, the command runner and argv, the state directory
// and the clock. Build is the one setup path for every command (audit, probe, remediate,
// revert, run and config check), and the daemon calls it again on SIGHUP, so a reload
// rebuilds everything the configuration drives.
package env

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// Flags are the global flags every command shares.
type Flags struct {
	Root       string         // --root
	ConfigFile string         // --config; "" means DefaultConfigFile under Root, optional
	Set        *pflag.FlagSet // the persistent flags, bound to a fresh viper on every Build
	Stderr     io.Writer      // logs
}

// Env is what a command needs once configuration and layout are settled.
type Env struct {
	Root   string
	Config *config.Config
	Log    zerolog.Logger
	// Layout is nil when no cPanel layout was found; LayoutErr then says what was looked for.
	// Commands that cannot work without one return LayoutErr (see RequireLayout).
	Layout    *apacheconf.Layout
	LayoutErr error
	Runner    apacheconf.Runner
	State     *state.State
	Now       func() time.Time
}

// ErrRoot means --root is not a directory.
var ErrRoot = errors.New("bad --root")

// Build loads the configuration (file, environment, flags), sets up logging, checks --root and
// detects the layout. It creates nothing and runs nothing.
func Build(f Flags) (*Env, error) {
	v := config.NewViper()
	if f.Set != nil {
		for key, flag := range map[string]string{"log.level": "log-level", "log.format": "log-format", "commands.timeout": "command-timeout"} {
			if fl := f.Set.Lookup(flag); fl != nil {
				if err := v.BindPFlag(key, fl); err != nil {
					return nil, err
				}
			}
		}
	}
	root := f.Root
	if root == "" {
		root = "/"
	}
	if info, err := os.Stat(root); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrRoot, root)
	}
	// Absolute, so every path built from it means the same to the commands we run: httpd
	// resolves a relative -f under its -d, which is itself under the root.
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	file, explicit := f.ConfigFile, f.ConfigFile != ""
	if !explicit {
		file = apacheconf.HostPath(root, config.DefaultConfigFile)
	}
	cfg, err := config.Load(v, file, explicit)
	if err != nil {
		return nil, err
	}
	log, err := NewLogger(f.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrConfig, err)
	}
	e := &Env{
		Root:   root,
		Config: cfg,
		Log:    log,
		Runner: apacheconf.ExecRunner{Timeout: cfg.Commands.Timeout},
		State:  &state.State{Dir: apacheconf.HostPath(root, cfg.StateDir), Now: time.Now, Root: root},
		Now:    time.Now,
	}
	e.Layout, e.LayoutErr = apacheconf.Detect(root)
	if e.Layout != nil && e.Layout.PathsConfJunk > 0 {
		log.Warn().Int("lines", e.Layout.PathsConfJunk).Msg("ignored lines in paths.conf that are not key=value")
	}
	return e, nil
}

// RequireLayout returns the layout, or the error that says why there is none.
func (e *Env) RequireLayout() (*apacheconf.Layout, error) {
	if e.Layout == nil {
		return nil, e.LayoutErr
	}
	return e.Layout, nil
}

// Commands are the config test, restart and rebuild argv: cPanel's defaults for the layout,
// each replaceable in the configuration (first word resolved under --root).
// AskApache asks httpd, read-only (apacheconf.Ask), and puts its answers in e's layout: its
// compiled-in modules and version drive the reading of the config, and where its answers
// and the reading disagree, nothing is done on the reading (remediate.Assess refuses). When
// httpd cannot be asked, the layout is left as it was (the defaults) and the error returned.
func (e *Env) AskApache(ctx context.Context) error {
	l, err := e.RequireLayout()
	if err != nil {
		return err
	}
	ans, err := apacheconf.Ask(ctx, e.Runner, l)
	if err != nil {
		return err
	}
	asked := *l
	asked.Answers = ans
	e.Layout = &asked
	return nil
}

func (e *Env) Commands() apacheconf.Commands {
	l := e.Layout
	c := l.DefaultCommands()
	rooted := func(argv []string) []string {
		out := append([]string(nil), argv...)
		out[0] = apacheconf.HostPath(l.Root, out[0])
		return out
	}
	cc := e.Config.Commands
	if len(cc.ConfigTest) > 0 {
		c.ConfigTest = rooted(cc.ConfigTest)
	}
	if len(cc.Restart) > 0 {
		c.Restart = rooted(cc.Restart)
	}
	if len(cc.Rebuild) > 0 {
		c.Rebuild = rooted(cc.Rebuild)
	}
	return c
}

// NewLogger is zerolog to w: JSON, or the console writer when format is "console" or when
// format is empty and w is a terminal. With format empty and w the journal's stream (a
// systemd unit's stderr: JOURNAL_STREAM), the same JSON lines go to journald natively, each
// field a journal field too (journaldWriter); "log.format: json" keeps them plain on stderr.
func NewLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	var send journalSend
	if stderrIsJournal(w) {
		send = journal.Send
	}
	return newLogger(w, level, format, send)
}

// newLogger is NewLogger with journald's send given when w is the journal's stream (nil when
// it is not), so tests record what journald would get.
func newLogger(w io.Writer, level, format string, send journalSend) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	if w == nil {
		w = io.Discard
	}
	auto := format == ""
	if auto {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	switch {
	case format == "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	case auto && send != nil:
		w = journaldWriter{fallback: w, send: send}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}
