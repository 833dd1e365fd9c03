package apacheconf

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Dumped is what `httpd -t -D DUMP_CONFIG` prints (mod_info must be loaded) of the directives
// the agent's decisions rest on: the configuration exactly as Apache evaluated it, conditional
// sections applied, ${VAR} expanded, Includes inlined. Format (FACTS.md section 14; the
// differential test proves it on hundreds of configs):
//
//	# In file: /etc/apache2/conf/httpd.conf
//	#  13:
//	SSLStaplingCache shmcb:run/stap(256000)
//	#  26:
//	<VirtualHost 127.0.0.1:443>
//	  #  32:
//	  SSLUseStapling on
//	</VirtualHost>
//
// "# N:" is the statement's last physical line (stmt.End). Directives executed while reading
// (Include, LoadModule, Define) and the conditional containers are not printed.
type Dumped struct {
	// Directives are the dumped ones of DumpCompared, in order. Location.Line is Apache's
	// "# N:" line; VHost is the enclosing <VirtualHost>, also at its "# N:" line.
	Directives []Directive
	// Files are the files at least one printed directive came from, in first-seen order.
	Files []string
}

// DumpCompared are the directives compared with Apache's DUMP_CONFIG at run time: those that
// decide effective stapling, the stapling cache, and the error log the agent follows.
var DumpCompared = map[string]bool{"sslusestapling": true, "sslstaplingcache": true, "errorlog": true, "errorlogformat": true}

// maxDumpLine bounds one line of DUMP_CONFIG: Apache's own config lines are far shorter.
const maxDumpLine = 1 << 20

// dumpParser reads DUMP_CONFIG line by line, so a 20 MB dump is never held whole.
type dumpParser struct {
	root  string
	d     Dumped
	file  string
	line  int
	vhost *Location
	seen  map[string]bool
}

func newDumpParser(root string) *dumpParser {
	return &dumpParser{root: root, seen: map[string]bool{}}
}

// add handles one line of the dump. Lines that are not part of the dump (warnings and
// "Syntax OK" on stderr, when both streams arrive together) are neither comments, containers
// nor compared directives, and are passed over.
func (p *dumpParser) add(raw []byte) {
	s := bytes.TrimSpace(raw)
	switch {
	case len(s) == 0:
	case bytes.HasPrefix(s, []byte("# In file: ")):
		p.file = Unroot(p.root, string(s[len("# In file: "):]))
		if !p.seen[p.file] {
			p.seen[p.file] = true
			p.d.Files = append(p.d.Files, p.file)
		}
	case s[0] == '#':
		if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(string(s[1:]), ":"))); err == nil && bytes.HasSuffix(s, []byte(":")) {
			p.line = n
		}
	case bytes.HasPrefix(s, []byte("</")):
		if strings.EqualFold(strings.TrimSpace(strings.TrimSuffix(string(s[2:]), ">")), "VirtualHost") {
			p.vhost = nil
		}
	case s[0] == '<':
		if words := splitArgs(strings.TrimSuffix(string(s[1:]), ">")); len(words) > 0 && strings.EqualFold(words[0], "VirtualHost") {
			p.vhost = &Location{File: p.file, Line: p.line}
		}
	default:
		name, _, _ := bytes.Cut(s, []byte(" "))
		if !DumpCompared[strings.ToLower(string(name))] || p.file == "" {
			return
		}
		words := splitArgs(string(s))
		d := Directive{Name: words[0], Args: words[1:], Location: Location{File: p.file, Line: p.line}}
		if p.vhost != nil {
			v := *p.vhost
			d.VHost = &v
		}
		p.d.Directives = append(p.d.Directives, d)
	}
}

// LineRunner is a Runner that hands a command's standard output over line by line.
type LineRunner interface {
	RunLines(ctx context.Context, argv []string, fn func(line []byte)) error
}

// RunLines runs argv like Run, handing each line of its standard output to fn as it comes;
// standard error is kept (its last 4 KiB) for the error. Lines longer than 1 MiB are an error.
func (r ExecRunner) RunLines(ctx context.Context, argv []string, fn func(line []byte)) error {
	if len(argv) == 0 {
		return errors.New("empty command")
	}
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	cmd := newCommand(ctx, argv)
	stderr := &tailBuffer{max: 4096}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return &CmdError{Argv: argv, Err: err}
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64*1024), maxDumpLine)
	for sc.Scan() {
		fn(sc.Bytes())
	}
	readErr := sc.Err()
	if readErr != nil {
		_ = killGroup(cmd)
		_, _ = io.Copy(io.Discard, out)
	}
	err = cmd.Wait()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("timed out after %s: %w", r.Timeout, context.DeadlineExceeded)
	case readErr != nil: // we killed it
		err = fmt.Errorf("reading its output: %w", readErr)
	}
	if err != nil {
		return &CmdError{Argv: argv, Output: stderr.b, Err: err}
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// dump asks httpd for DUMP_CONFIG through the runner, streaming when it can.
func dump(ctx context.Context, r Runner, argv []string, root string) (*Dumped, error) {
	p := newDumpParser(root)
	if lr, ok := r.(LineRunner); ok {
		if err := lr.RunLines(ctx, argv, p.add); err != nil {
			return nil, err
		}
		return &p.d, nil
	}
	out, err := r.Run(ctx, argv)
	if err != nil {
		return nil, err
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		p.add(line)
	}
	return &p.d, nil
}

// DumpDisagreement compares the reading with Apache's DUMP_CONFIG: every compared directive
// (name, arguments, file, line, enclosing vhost) in order, and every file Apache printed a
// directive from must be one the agent read. It returns what differs, "" when they agree.
func (c *Config) DumpDisagreement(d *Dumped) string {
	vhostEnd := map[Location]int{}
	for _, v := range c.VHosts {
		vhostEnd[v.Location] = v.OpenEnd
	}
	var mine []string
	for _, t := range c.Trace {
		if !DumpCompared[strings.ToLower(t.Name)] {
			continue
		}
		x := Directive{Name: t.Name, Args: t.Args, Location: Location{File: t.File, Line: t.End}}
		if t.VHost != nil {
			x.VHost = &Location{File: t.VHost.File, Line: vhostEnd[*t.VHost]}
		}
		mine = append(mine, dumpKey(x))
	}
	var apache []string
	for _, x := range d.Directives {
		apache = append(apache, dumpKey(x))
	}
	var diffs []string
	if i := firstDifference(apache, mine); i >= 0 {
		at := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "nothing"
		}
		diffs = append(diffs, fmt.Sprintf("DUMP_CONFIG: directive %d is %s in Apache's reading, %s in the agent's (%d and %d compared directives)",
			i+1, at(apache), at(mine), len(apache), len(mine)))
	}
	read := map[string]bool{}
	for _, f := range c.Files {
		read[f] = true
	}
	var missed []string
	for _, f := range d.Files {
		if !read[f] {
			missed = append(missed, f)
		}
	}
	if len(missed) > 0 {
		diffs = append(diffs, "DUMP_CONFIG: Apache read "+short(missed)+", which the agent did not")
	}
	return strings.Join(diffs, "; ")
}

// dumpKey is how a compared directive is compared: SSLUseStapling's value is case-insensitive.
func dumpKey(d Directive) string {
	args := append([]string(nil), d.Args...)
	name := strings.ToLower(d.Name)
	if name == "sslusestapling" {
		for i := range args {
			args[i] = strings.ToLower(args[i])
		}
	}
	scope := "global"
	if d.VHost != nil {
		scope = fmt.Sprintf("<VirtualHost> at %s:%d", d.VHost.File, d.VHost.Line)
	}
	return fmt.Sprintf("%s:%d %s %q (%s)", d.File, d.Line, name, args, scope)
}

func firstDifference(a, b []string) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}
