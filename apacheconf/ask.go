package apacheconf

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// AskTimeout bounds each question to httpd: `-t -D DUMP_RUN_CFG` parses the whole config,
// a second or so on a 3,000-account host.
const AskTimeout = 30 * time.Second

// Answers is what httpd says of itself and of its config, read-only: `-v` (version), `-l`
// (modules compiled in), `-M` (modules loaded by the config) and `-t -D DUMP_RUN_CFG` (the main
// ErrorLog, every Define). Nothing is started, written or restarted by any of them.
type Answers struct {
	Apache   Apache
	Loaded   []string // module identifiers, sorted
	ErrorLog string   // as httpd resolved it (a path on the host)
	Defines  []string // NAME or NAME=VALUE, sorted
}

var (
	versionLine = regexp.MustCompile(`Server version: Apache/([0-9][0-9.]*)`)
	moduleLine  = regexp.MustCompile(`^\s*([A-Za-z0-9_]+_module) \((static|shared)\)`)
	errorLogRun = regexp.MustCompile(`^Main ErrorLog: "(.*)"`)
	defineRun   = regexp.MustCompile(`^Define: (.*)$`)
)

// Ask asks the layout's httpd, through the runner (the one place commands run), with each
// question bounded by AskTimeout. The binary must be one only root could have written
// (TrustedCommand): as root the agent runs it.
func Ask(ctx context.Context, r Runner, l *Layout) (*Answers, error) {
	bin := l.Path(l.HTTPD)
	if err := TrustedCommand(l.Root, bin); err != nil {
		return nil, err
	}
	// httpd started by hand must find its config as the service does: -d and -f as cPanel's.
	base := []string{bin, "-d", l.Path(l.ServerRoot), "-f", l.Path(l.HTTPDConf)}
	ask := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, AskTimeout)
		defer cancel()
		out, err := r.Run(ctx, append(append([]string(nil), base...), args...))
		return string(out), err
	}
	a := &Answers{}
	out, err := ask("-v")
	if err != nil {
		return nil, err
	}
	m := versionLine.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("%s -v: no \"Server version: Apache/...\" in its answer", l.HTTPD)
	}
	a.Apache.Version = m[1]
	if out, err = ask("-l"); err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.TrimSpace(line); strings.HasSuffix(f, ".c") {
			a.Apache.Builtin = append(a.Apache.Builtin, f)
		}
	}
	if out, err = ask("-M"); err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if m := moduleLine.FindStringSubmatch(line); m != nil {
			a.Loaded = append(a.Loaded, m[1])
		}
	}
	if out, err = ask("-t", "-D", "DUMP_RUN_CFG"); err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if m := errorLogRun.FindStringSubmatch(line); m != nil {
			a.ErrorLog = Unroot(l.Root, m[1])
		}
		if m := defineRun.FindStringSubmatch(line); m != nil {
			a.Defines = append(a.Defines, m[1])
		}
	}
	sort.Strings(a.Loaded)
	sort.Strings(a.Defines)
	if a.Apache.Version == "" || len(a.Apache.Builtin) == 0 {
		return nil, fmt.Errorf("%s -v / -l: no version or compiled-in module list in its answer", l.HTTPD)
	}
	return a, nil
}

// Disagreement compares the agent's reading of the config with Apache's answers: the modules
// loaded and the main ErrorLog. It returns what differs, "" when they agree. Where they
// differ, the agent's model is wrong somewhere, and nothing should rest on it.
func (c *Config) Disagreement(a *Answers, fallbackLog string) string {
	var diffs []string
	mine := c.LoadedModules()
	if strings.Join(mine, " ") != strings.Join(a.Loaded, " ") {
		diffs = append(diffs, fmt.Sprintf("loaded modules: Apache %s, the agent read %s", short(a.Loaded), short(mine)))
	}
	if a.ErrorLog != "" {
		if log, err := c.ErrorLogFile(fallbackLog); err == nil && log != a.ErrorLog {
			diffs = append(diffs, fmt.Sprintf("main ErrorLog: Apache %s, the agent read %s", a.ErrorLog, log))
		}
	}
	return strings.Join(diffs, "; ")
}

func short(list []string) string {
	if len(list) > 12 {
		return "[" + strings.Join(list[:12], " ") + fmt.Sprintf(" and %d more]", len(list)-12)
	}
	return "[" + strings.Join(list, " ") + "]"
}
