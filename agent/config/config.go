// Package config is stapling-agent's configuration: /etc/stapling-agent/config.yaml under
// --root, STAPLING_AGENT_* environment variables and flags, through viper. Load rejects unknown
// keys by name, bad values with the key and the reason, and (as root) a file another user
// could have written, since it names commands run as root.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// DefaultConfigFile, DefaultStateDir, DefaultPauseFile and DefaultTextfileDir are host paths,
// resolved under --root.
const (
	DefaultConfigFile = "/etc/stapling-agent/config.yaml"
	DefaultStateDir   = "/var/lib/stapling-agent"
	DefaultPauseFile  = "/etc/stapling-agent/pause"
	// DefaultTextfileDir is where Debian's and the upstream packages' node_exporter read
	// textfiles from by convention; node_exporter has no standard one (FACTS.md section 9).
	DefaultTextfileDir = "/var/lib/node_exporter/textfile_collector"
	envPrefix          = "STAPLING_AGENT"
)

// DefaultAutoRevertAfter is policy.auto_revert_after's default: a day. Stapling off costs
// little (browsers soft-fail or do not ask OCSP at all; Must-Staple vhosts stay exempt), while
// reverting into a responder that still fails now and then brings back the stall on every
// handshake and costs two Apache restarts. The daemon reverts only after every responder has
// answered correctly when asked from this host (every AutoRevertEvery, 288 checks in a day)
// with no failure logged meanwhile, so a day of clean answers rides out a CA's partial
// recovery and a full daily traffic cycle, reverts at most once a day (matching
// policy.max_per_day's period), and stapling never stays off forever after an outage.
const DefaultAutoRevertAfter = 24 * time.Hour

// DefaultSpread is policy.spread's default: a fleet that sees one CA's outage in the same
// minute restarts its Apaches over a minute instead of in the same second, which delays the
// fix by 30 s on average against an outage that stalls every handshake for the responder
// timeout.
const DefaultSpread = 60 * time.Second

// Config is the agent's configuration. Every key has a default (so viper reads it from the
// environment too: FACTS.md section 7, Unmarshal ignores env vars for keys without one).
type Config struct {
	Mode     policy.Mode `mapstructure:"mode"`      // enforce | dry-run
	StateDir string      `mapstructure:"state_dir"` // host path
	Log      struct {
		Level  string `mapstructure:"level"`
		Format string `mapstructure:"format"` // "" (auto) | json | console
	} `mapstructure:"log"`
	Policy struct {
		Threshold int           `mapstructure:"threshold"`
		Window    time.Duration `mapstructure:"window"`
		Cooldown  time.Duration `mapstructure:"cooldown"`
		MaxPerDay int           `mapstructure:"max_per_day"`
		// AutoRevertAfter: while stapling is off by our hand, revert once every responder
		// has answered correctly for this long. 0 never reverts; see DefaultAutoRevertAfter.
		AutoRevertAfter time.Duration `mapstructure:"auto_revert_after"`
		// Spread: after deciding to remediate, wait a random delay of up to this long, then
		// decide again, so a fleet hit by one CA outage does not restart every Apache in the
		// same second. 0 acts at once.
		Spread time.Duration `mapstructure:"spread"`
		// PauseFile (a host path, "" for none): while it exists the daemon decides and reports
		// but never changes anything (decision paused). Fleet tooling drops it to stop a
		// fleet at once.
		PauseFile string `mapstructure:"pause_file"`
		// Blast radius (policy.Params): failing responders that serve under this share of the
		// SSL vhosts, or only one account's while others have SSL vhosts, are reported
		// (decision scoped_out), not fixed by turning stapling off for everyone.
		ScopeOutShare         float64 `mapstructure:"scope_out_share"`
		ScopeOutSingleAccount bool    `mapstructure:"scope_out_single_account"`
		// MustStaple is what a remediation does about SSL vhosts that serve a Must-Staple
		// certificate and would lose their staple: exempt them (a per-vhost include keeps
		// stapling on for them alone) or veto the remediation for the whole server.
		MustStaple MustStaple `mapstructure:"must_staple"`
	} `mapstructure:"policy"`
	Metrics struct {
		// TextfileDir is node_exporter's textfile collector directory (a host path): the
		// daemon writes its counters there as DaemonTextfile. "" writes none; a directory
		// that does not exist (node_exporter not installed) is not created.
		TextfileDir string `mapstructure:"textfile_dir"`
	} `mapstructure:"metrics"`
	Commands struct {
		Timeout    time.Duration `mapstructure:"timeout"`
		ConfigTest []string      `mapstructure:"configtest"` // empty: <apachectl> -t
		Restart    []string      `mapstructure:"restart"`    // empty: restartsrv_httpd
		Rebuild    []string      `mapstructure:"rebuild"`    // empty: rebuildhttpdconf (EA4)
	} `mapstructure:"commands"`
}

// MustStaple is the policy.must_staple key: what a remediation does about SSL vhosts serving a
// Must-Staple certificate (TLS Feature status_request), which Firefox rejects without a staple.
type MustStaple string

const (
	// MustStapleExempt (the default): stapling goes off for every other vhost, and stays on
	// for those through a per-vhost include (cPanel's userdata include) that the same
	// transaction writes; a vhost that cannot be exempted still refuses the remediation.
	MustStapleExempt MustStaple = "exempt"
	// MustStapleVeto: one such vhost refuses the remediation for the whole server (the
	// behaviour before exemptions existed).
	MustStapleVeto MustStaple = "veto"
)

var defaults = map[string]any{
	"mode":                            string(policy.Enforce),
	"state_dir":                       DefaultStateDir,
	"log.level":                       "info",
	"log.format":                      "",
	"policy.threshold":                3,
	"policy.window":                   10 * time.Minute,
	"policy.cooldown":                 time.Hour,
	"policy.max_per_day":              3,
	"policy.auto_revert_after":        DefaultAutoRevertAfter,
	"policy.spread":                   DefaultSpread,
	"policy.pause_file":               DefaultPauseFile,
	"metrics.textfile_dir":            DefaultTextfileDir,
	"policy.scope_out_share":          0.05,
	"policy.scope_out_single_account": true,
	"policy.must_staple":              string(MustStapleExempt),
	"commands.timeout":                120 * time.Second,
	"commands.configtest":             []string{},
	"commands.restart":                []string{},
	"commands.rebuild":                []string{},
}

// NewViper returns a viper with every key defaulted and bound to STAPLING_AGENT_<KEY>.
func NewViper() *viper.Viper {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	return v
}

// ErrConfig marks configuration problems (exit code 2).
var ErrConfig = errors.New("bad configuration")

// Load reads file into v (a missing file is fine unless explicit), rejects unknown keys
// by name, and, when running as root, a file that another user could have written: the config
// names commands the agent runs as root.
func Load(v *viper.Viper, file string, explicit bool) (*Config, error) {
	info, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		// Built-in defaults, environment and flags only.
	case err != nil:
		return nil, fmt.Errorf("%w: config file %s: %v", ErrConfig, file, unwrapPath(err))
	default:
		if err := checkOwner(file, info); err != nil {
			return nil, err
		}
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("%w: config file %s: %s", ErrConfig, file, err)
		}
		var unknown []string
		for _, k := range v.AllKeys() {
			if _, ok := defaults[k]; !ok {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, fmt.Errorf("%w: config file %s: unknown key %q (known keys: %s)",
				ErrConfig, file, unknown[0], strings.Join(knownKeys(), ", "))
		}
	}
	var c Config
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		wordsHook,
	))
	if err := v.UnmarshalExact(&c, hook); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return &c, nil
}

// wordsHook lets a command be written as one string ("/usr/sbin/apachectl -t"), as it must be
// in an environment variable: it is split on whitespace, never run through a shell.
func wordsHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.String && to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String {
		return strings.Fields(data.(string)), nil
	}
	return data, nil
}

func (c *Config) validate() error {
	switch {
	case c.Mode != policy.Enforce && c.Mode != policy.DryRunMode:
		return fmt.Errorf("mode must be enforce or dry-run, not %q", c.Mode)
	case c.Policy.Threshold < 1:
		return fmt.Errorf("policy.threshold must be at least 1, not %d", c.Policy.Threshold)
	case c.Policy.Window <= 0:
		return fmt.Errorf("policy.window must be positive, not %s", c.Policy.Window)
	case c.Policy.Cooldown < 0:
		return fmt.Errorf("policy.cooldown must not be negative, not %s", c.Policy.Cooldown)
	case c.Policy.MaxPerDay < 1:
		return fmt.Errorf("policy.max_per_day must be at least 1, not %d", c.Policy.MaxPerDay)
	case c.Policy.ScopeOutShare < 0 || c.Policy.ScopeOutShare > 1:
		return fmt.Errorf("policy.scope_out_share must be between 0 and 1, not %g", c.Policy.ScopeOutShare)
	case c.Policy.AutoRevertAfter < 0:
		return fmt.Errorf("policy.auto_revert_after must not be negative, not %s", c.Policy.AutoRevertAfter)
	case c.Policy.Spread < 0:
		return fmt.Errorf("policy.spread must not be negative, not %s", c.Policy.Spread)
	case c.Policy.PauseFile != "" && !strings.HasPrefix(c.Policy.PauseFile, "/"):
		return fmt.Errorf("policy.pause_file must be an absolute path or empty, not %q", c.Policy.PauseFile)
	case c.Metrics.TextfileDir != "" && !strings.HasPrefix(c.Metrics.TextfileDir, "/"):
		return fmt.Errorf("metrics.textfile_dir must be an absolute path or empty, not %q", c.Metrics.TextfileDir)
	case c.Policy.MustStaple != MustStapleExempt && c.Policy.MustStaple != MustStapleVeto:
		return fmt.Errorf("policy.must_staple must be exempt or veto, not %q", c.Policy.MustStaple)
	case c.Commands.Timeout <= 0:
		return fmt.Errorf("commands.timeout must be positive, not %s", c.Commands.Timeout)
	case c.Log.Format != "" && c.Log.Format != "json" && c.Log.Format != "console":
		return fmt.Errorf("log.format must be json or console, not %q", c.Log.Format)
	case !strings.HasPrefix(c.StateDir, "/"):
		return fmt.Errorf("state_dir must be an absolute path, not %q", c.StateDir)
	}
	return nil
}

func checkOwner(file string, info fs.FileInfo) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if ok && st.Uid != 0 {
		return fmt.Errorf("%w: config file %s is owned by uid %d, not root; it names commands run as root (chown root %s)",
			ErrConfig, file, st.Uid, file)
	}
	if info.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: config file %s is writable by group or others (mode %04o); it names commands run as root (chmod 600 %s)",
			ErrConfig, file, info.Mode().Perm(), file)
	}
	return nil
}

func knownKeys() []string {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Params are the policy keys, as policy.Decide takes them.
func (c *Config) Params() policy.Params {
	return policy.Params{Threshold: c.Policy.Threshold, Window: c.Policy.Window, Cooldown: c.Policy.Cooldown, MaxPerDay: c.Policy.MaxPerDay,
		ScopeOutShare: c.Policy.ScopeOutShare, ScopeOutSingleAccount: c.Policy.ScopeOutSingleAccount}
}

// Paused is the pause file as configured (policy.pause_file) when it exists under root, ""
// when it does not or none is configured: while fleet tooling keeps it there, the daemon
// decides and reports but never acts, and the audit says so. Any kind of file counts, and
// so does one that cannot be looked at (a stat error other than "does not exist"): when in
// doubt about a stop sign, stop.
func (c *Config) Paused(root string) string {
	if c.Policy.PauseFile == "" {
		return ""
	}
	_, err := os.Lstat(apacheconf.HostPath(root, c.Policy.PauseFile))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return ""
	}
	return c.Policy.PauseFile
}
