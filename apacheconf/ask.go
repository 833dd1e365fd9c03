package apacheconf

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AskTimeout bounds each question to httpd: `-S` (and `-M`) parse the whole config,
// a second or so on a 3,000-account host.
const AskTimeout = 30 * time.Second

// Answers is what httpd says of itself and of its config, read-only: `-v` (version), `-l`
// (modules compiled in), `-M` (modules loaded by the config), `-S` (every vhost with its
// file:line, the main ErrorLog, every Define: -t -D DUMP_VHOSTS -D DUMP_RUN_CFG) and, where
// the config loads mod_info, `-t -D DUMP_CONFIG` (the evaluated config itself). Nothing is
// started, written or restarted by any of them.
type Answers struct {
	Apache   Apache
	Loaded   []string   // module identifiers, sorted
	VHosts   []Location // where each <VirtualHost> stands (its last line), host paths, sorted and unique
	ErrorLog string     // as httpd resolved it (a path on the host)
	Defines  []string   // NAME or NAME=VALUE, sorted, without the DUMP_* that -S itself defines
	// Dump is DUMP_CONFIG's reading, nil where mod_info is not loaded (Apache then cannot
	// print its config; the other answers are still compared).
	Dump *Dumped
}

var (
	versionLine = regexp.MustCompile(`Server version: Apache/([0-9][0-9.]*)`)
	moduleLine  = regexp.MustCompile(`^\s*([A-Za-z0-9_]+_module) \((static|shared)\)`)
	errorLogRun = regexp.MustCompile(`^Main ErrorLog: "(.*)"`)
	vhostAt     = regexp.MustCompile(`\((/[^()]*):([0-9]+)\)\s*$`)
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
	if out, err = ask("-S"); err != nil {
		return nil, err
	}
	seen := map[Location]bool{}
	for _, line := range strings.Split(out, "\n") {
		if m := vhostAt.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[2])
			if at := (Location{File: Unroot(l.Root, m[1]), Line: n}); !seen[at] {
				seen[at] = true
				a.VHosts = append(a.VHosts, at)
			}
		}
		if m := errorLogRun.FindStringSubmatch(line); m != nil {
			a.ErrorLog = Unroot(l.Root, m[1])
		}
		if m := defineRun.FindStringSubmatch(line); m != nil && m[1] != "DUMP_VHOSTS" && m[1] != "DUMP_RUN_CFG" {
			a.Defines = append(a.Defines, m[1])
		}
	}
	if slices.Contains(a.Loaded, "info_module") {
		ctx, cancel := context.WithTimeout(ctx, AskTimeout)
		defer cancel()
		if a.Dump, err = dump(ctx, r, append(append([]string(nil), base...), "-t", "-D", "DUMP_CONFIG"), l.Root); err != nil {
			return nil, err
		}
	}
	sort.Strings(a.Loaded)
	sort.Strings(a.Defines)
	sortLocations(a.VHosts)
	if a.Apache.Version == "" || len(a.Apache.Builtin) == 0 {
		return nil, fmt.Errorf("%s -v / -l: no version or compiled-in module list in its answer", l.HTTPD)
	}
	return a, nil
}

// Disagreement compares the agent's reading of the config with Apache's answers: the modules
// loaded, every vhost's file:line, the main ErrorLog, the Defines, and where Apache could
// print it (mod_info), every directive stapling and the error log depend on. It returns what
// differs, "" when they agree. Where they differ, the agent's model is wrong somewhere, and
// nothing should rest on it.
func (c *Config) Disagreement(a *Answers, fallbackLog string) string {
	var diffs []string
	mine := c.LoadedModules()
	if strings.Join(mine, " ") != strings.Join(a.Loaded, " ") {
		diffs = append(diffs, fmt.Sprintf("loaded modules: Apache %s, the agent read %s", short(a.Loaded), short(mine)))
	}
	var mineV []Location
	seen := map[Location]bool{}
	for _, v := range c.VHosts {
		// -S names a <VirtualHost> by its last physical line, as DUMP_CONFIG does.
		if at := (Location{File: v.File, Line: v.OpenEnd}); !seen[at] {
			seen[at] = true
			mineV = append(mineV, at)
		}
	}
	sortLocations(mineV)
	if only, other := locDiff(a.VHosts, mineV), locDiff(mineV, a.VHosts); len(only)+len(other) > 0 {
		diffs = append(diffs, fmt.Sprintf("vhosts: Apache has %d, the agent read %d (only Apache's: %s; only the agent's: %s)",
			len(a.VHosts), len(mineV), locList(only), locList(other)))
	}
	if a.ErrorLog != "" {
		if log, err := c.ErrorLogFile(fallbackLog); err == nil && log != a.ErrorLog {
			diffs = append(diffs, fmt.Sprintf("main ErrorLog: Apache %s, the agent read %s", a.ErrorLog, log))
		}
	}
	if mine := c.Defines(); strings.Join(mine, " ") != strings.Join(a.Defines, " ") {
		diffs = append(diffs, fmt.Sprintf("defines: Apache %s, the agent read %s", short(a.Defines), short(mine)))
	}
	if a.Dump != nil {
		if d := c.DumpDisagreement(a.Dump); d != "" {
			diffs = append(diffs, d)
		}
	}
	return strings.Join(diffs, "; ")
}

func sortLocations(l []Location) {
	sort.Slice(l, func(i, j int) bool {
		if l[i].File != l[j].File {
			return l[i].File < l[j].File
		}
		return l[i].Line < l[j].Line
	})
}

// locDiff are the locations of a that b lacks.
func locDiff(a, b []Location) []Location {
	in := map[Location]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []Location
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

func locList(l []Location) string {
	if len(l) == 0 {
		return "none"
	}
	var parts []string
	for i, x := range l {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(l)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%s:%d", x.File, x.Line))
	}
	return strings.Join(parts, ", ")
}

func short(list []string) string {
	if len(list) > 12 {
		return "[" + strings.Join(list[:12], " ") + fmt.Sprintf(" and %d more]", len(list)-12)
	}
	return "[" + strings.Join(list, " ") + "]"
}
