// Command benchdetect measures whether the daemon's detection-to-write time is flat in the
// vhost count. For each size it writes a cPanel-shaped EA4 host with scripts/genhost (two
// vhosts an account or more, a certificate each), puts stand-ins that only print success where
// cPanel's apachectl and restartsrv_httpd live, and runs `stapling-agent run` in enforce mode
// on it.
// Each run starts from a clean host (the admin's include, no state directory, an empty
// error_log, a fresh daemon that has read the config at its start), appends the three
// AH01974/AH01941 pairs that reach the threshold in one write, and takes the time from just
// before that write to the journal's "written" step (the daemon's own timestamp, taken right
// after the include's rename). It reports, per size, the median and max over the runs, and
// the ratio of the largest host's median to the smallest's in the same run.
//
// The corroborating check is real: genhost's certificates name http://127.0.0.1:9/, where
// nothing listens (checked before the first run), so the daemon's own OCSP request is refused
// at once, as in the CLI tests; it costs the same at every size. The handshakes the
// remediation makes before writing (at most 10, to port 18443 on loopback, also closed) are
// refused at once too. No httpd stands in, so the daemon reads the config with its defaults
// (asking httpd happens once at start, not on the path measured).
//
// With -check it exits 1 when the ratio of medians exceeds -bound (3.0). Why 3.0 and not 2.0:
// with the responder refused at once, the fixed part of detection-to-write is small (4-12 ms on
// a 2-core machine: the inotify wake-up, the corroborating request, the backup, the journal's
// intent, the atomic write), so a ratio over it magnifies every millisecond. One config walk
// at 3,000 accounts costs about 250 ms, and the plan's two readings side by side about 300 ms:
// ratio 30-50 at 3,000 accounts and about 8 at 500. A daemon that reuses its reading
// (measured on a scratch build whose remediation reused the plan of the facts' reading) still
// spends about 3 ms at 3,000 accounts in memory (policy's blast radius: a map and a sort of
// every vhost and account name) and measured ratios of 1.2-2.1 in ten runs of this harness:
// 2.0 would fail such a daemon one run in five; 3.0 passes it and fails a walk tenfold. A
// black-holed responder (as in scripts/bench-remediate.sh) would add its timeout, 3 s, to
// every size and hide a 300 ms walk in a ratio of 1.1, which is why the responder is refused
// here instead.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	bin      = flag.String("bin", "", "stapling-agent binary")
	genhost  = flag.String("genhost", "", "genhost binary")
	dir      = flag.String("dir", "", "work directory (the caller's, removed by the caller)")
	accounts = flag.String("accounts", "10,500,3000", "host sizes in cPanel accounts (two vhosts each), smallest first")
	runs     = flag.Int("runs", 7, "runs per size")
	check    = flag.Bool("check", true, "exit 1 when the ratio exceeds -bound")
	bound    = flag.Float64("bound", 3.0, "largest host's median / smallest host's median must not exceed this")
)

// Paths in the host, as cPanel's EA4 layout has them.
const (
	include  = "etc/apache2/conf.d/includes/pre_virtualhost_global.conf"
	errorLog = "var/log/apache2/error_log"
	stateDir = "var/lib/stapling-agent"
	journal  = stateDir + "/journal.jsonl"
)

// Closed ports the measurement depends on: the certificates' OCSP responder (so corroboration
// is refused at once) and genhost's SSL listener (so the handshakes before the write are too).
var mustBeClosed = []string{"127.0.0.1:9", "127.0.0.1:18443", "[::1]:18443"}

func main() {
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var signalled atomic.Bool
	go func() {
		s := <-sig
		signalled.Store(true)
		stopAll()
		fmt.Fprintln(os.Stderr, "benchdetect: stopped by", s)
		os.Exit(130)
	}()
	err := run()
	if signalled.Load() {
		select {} // what run saw was the signal's doing; the handler exits
	}
	stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdetect:", err)
		os.Exit(1)
	}
}

// child is a process this harness started (genhost or a daemon). Each stays registered until
// it has exited, so a signal stops them all before the harness exits and the caller removes
// the work directory (a genhost left running would go on writing into it).
type child struct {
	cmd      *exec.Cmd
	graceful bool // SIGTERM first (the daemon finishes a remediation under way), then SIGKILL
	done     chan struct{}
	err      error
}

var (
	mu       sync.Mutex
	children = map[*child]bool{}
	stopped  bool // stopAll ran: start nothing more
)

func start(cmd *exec.Cmd, graceful bool) (*child, error) {
	// Should this harness be killed outright, the child goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	mu.Lock()
	defer mu.Unlock()
	if stopped {
		return nil, errors.New("stopped")
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, graceful: graceful, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	children[c] = true
	return c, nil
}

// wait waits for c to exit.
func (c *child) wait() error {
	<-c.done
	mu.Lock()
	delete(children, c)
	mu.Unlock()
	return c.err
}

// stop ends c: SIGTERM and up to 5 s when graceful (the daemon exits within 2 s), then SIGKILL.
func (c *child) stop() {
	if c.graceful {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
	}
	c.cmd.Process.Kill()
	c.wait()
}

func stopAll() {
	mu.Lock()
	stopped = true
	var all []*child
	for c := range children {
		all = append(all, c)
	}
	mu.Unlock()
	for _, c := range all {
		c.stop()
	}
}

type size struct {
	accounts int
	vhosts   int             // <VirtualHost sections in the generated httpd.conf
	times    []time.Duration // append -> include written, one per run
	intent   []time.Duration // append -> journal's intent (detection, decision, plan, lock)
}

func run() error {
	if *bin == "" || *genhost == "" || *dir == "" {
		return errors.New("-bin, -genhost and -dir are required")
	}
	for _, addr := range mustBeClosed {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("something listens on %s; the bench needs it closed (the corroborating check and the handshakes would wait on it)", addr)
		}
	}
	var sizes []*size
	for _, f := range strings.Split(*accounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad size %q (at least 1 account: with none no SSL vhost serves the responder, and the failures are foreign)", f)
		}
		sizes = append(sizes, &size{accounts: n})
	}
	for _, s := range sizes {
		host := filepath.Join(*dir, fmt.Sprintf("host-%d", s.accounts))
		if err := makeHost(host, s.accounts); err != nil {
			return err
		}
		admin, err := os.ReadFile(filepath.Join(host, include))
		if err != nil {
			return err
		}
		conf, err := os.ReadFile(filepath.Join(host, "etc/apache2/conf/httpd.conf"))
		if err != nil {
			return err
		}
		s.vhosts = bytes.Count(conf, []byte("\n<VirtualHost "))
		for i := 0; i < *runs; i++ {
			written, intent, err := once(host, admin)
			if err != nil {
				return fmt.Errorf("%d accounts, run %d: %w", s.accounts, i+1, err)
			}
			s.times = append(s.times, written)
			s.intent = append(s.intent, intent)
		}
		// The next size's host replaces this one (a 3,000-account host is ~30 MB).
		if err := os.RemoveAll(host); err != nil {
			return err
		}
	}

	fmt.Printf("detection-to-write: threshold-reaching AH01941 appended -> include written (journal), %d run(s) a size\n", *runs)
	fmt.Printf("%9s %7s %12s %12s %16s\n", "accounts", "vhosts", "median", "max", "median to intent")
	for _, s := range sizes {
		fmt.Printf("%9d %7d %12s %12s %16s\n", s.accounts, s.vhosts, ms(median(s.times)), ms(slices.Max(s.times)), ms(median(s.intent)))
	}
	small, large := sizes[0], sizes[len(sizes)-1]
	ratio := float64(median(large.times)) / float64(median(small.times))
	checked := ""
	if !*check {
		checked = ", not checked"
	}
	fmt.Printf("ratio median(%d accounts) / median(%d accounts) = %.2f (bound <= %.1f%s); max ratio %.2f\n",
		large.accounts, small.accounts, ratio, *bound, checked, float64(slices.Max(large.times))/float64(slices.Max(small.times)))
	if *check && ratio > *bound {
		return fmt.Errorf("MISSED: detection-to-write is not flat in the vhost count (ratio %.2f > %.1f)", ratio, *bound)
	}
	return nil
}

// makeHost writes a genhost host with stand-ins for cPanel's config test and restart, and a
// config that puts the daemon in enforce mode (the package ships dry-run).
func makeHost(host string, accounts int) error {
	var out syncBuffer
	cmd := exec.Command(*genhost, "-root", host, "-accounts", strconv.Itoa(accounts))
	cmd.Stdout, cmd.Stderr = &out, &out
	c, err := start(cmd, false)
	if err != nil {
		return err
	}
	if err := c.wait(); err != nil {
		return fmt.Errorf("genhost: %v\n%s", err, out.String())
	}
	files := []struct {
		path, content string
		mode          os.FileMode
	}{
		{"usr/sbin/apachectl", "#!/bin/sh\necho 'Syntax OK'\n", 0o755},
		{"usr/local/cpanel/scripts/restartsrv_httpd", "#!/bin/sh\necho 'httpd restarted successfully.'\n", 0o755},
		// 0600: as root the agent refuses a config file others can write.
		{"etc/stapling-agent/config.yaml", "mode: enforce\n", 0o600},
	}
	for _, f := range files {
		p := filepath.Join(host, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			return err
		}
	}
	return nil
}

// once runs one daemon on a clean host and times one outage: from just before the append to
// the journal's written step, and to its intent step.
func once(host string, admin []byte) (written, intent time.Duration, err error) {
	// Clean: the admin's include, no journal (so no cooldown), an empty log (so the start-up
	// replay finds nothing of the last run).
	if err := os.WriteFile(filepath.Join(host, include), admin, 0o644); err != nil {
		return 0, 0, err
	}
	if err := os.RemoveAll(filepath.Join(host, stateDir)); err != nil {
		return 0, 0, err
	}
	if err := os.WriteFile(filepath.Join(host, errorLog), nil, 0o644); err != nil {
		return 0, 0, err
	}

	var stderr syncBuffer
	cmd := exec.Command(*bin, "--root", host, "run")
	cmd.Stderr = &stderr
	// Only the host's config.yaml configures it: STAPLING_AGENT_MODE=dry-run in the caller's
	// environment would otherwise turn every run into a wait for a write that never comes.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STAPLING_AGENT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The fleet spread (a random wait of up to policy.spread before acting) is deliberate
	// latency, not the path measured here.
	cmd.Env = append(cmd.Env, "STAPLING_AGENT_POLICY_SPREAD=0s")
	daemon, err := start(cmd, true)
	if err != nil {
		return 0, 0, err
	}
	defer daemon.stop()
	if !waitFor(60*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(stderr.String(), "following error_log") }) {
		return 0, 0, fmt.Errorf("daemon did not start:\n%s", stderr.String())
	}
	// Let the loop reach its select: the facts were read in New, before the line above.
	time.Sleep(200 * time.Millisecond)

	f, err := os.OpenFile(filepath.Join(host, errorLog), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var lines bytes.Buffer
	ts := time.Now().Format("Mon Jan 02 15:04:05.000000 2006") // Apache writes local time
	for i := 0; i < 3; i++ {
		fmt.Fprintf(&lines, "[%s] [ssl:error] [pid %d] (111)Connection refused: [client 192.0.2.%d:443] AH01974: could not connect to OCSP responder '127.0.0.1:9'\n", ts, 5000+i, 10+i)
		fmt.Fprintf(&lines, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", ts, 5000+i)
	}
	appended := time.Now()
	if _, err := f.Write(lines.Bytes()); err != nil {
		return 0, 0, err
	}
	var w, in time.Time
	// The end is the daemon's own timestamp, so polling often buys nothing and would take CPU
	// from the daemon on a small machine.
	path := filepath.Join(host, journal)
	if !waitFor(60*time.Second, 10*time.Millisecond, func() bool { w, in = steps(path); return !w.IsZero() }) {
		return 0, 0, fmt.Errorf("include not written within 60 s:\n%s", stderr.String())
	}
	// The decision line follows the restart; wait for it so the run ends with a remediation
	// that succeeded, not one stopped halfway.
	if !waitFor(60*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(stderr.String(), `"decision":"remediate"`) }) {
		return 0, 0, fmt.Errorf("no remediate decision:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), `"result":"failed"`) {
		return 0, 0, fmt.Errorf("the remediation failed:\n%s", stderr.String())
	}
	return w.Sub(appended), in.Sub(appended), nil
}

// steps are the times of the journal's first remediate "written" and "intent" entries.
func steps(path string) (written, intent time.Time) {
	b, _ := os.ReadFile(path)
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct {
			Time   time.Time
			Action string
			Step   string
		}
		if json.Unmarshal(line, &e) != nil || e.Action != "remediate" {
			continue
		}
		if e.Step == "written" && written.IsZero() {
			written = e.Time
		}
		if e.Step == "intent" && intent.IsZero() {
			intent = e.Time
		}
	}
	return written, intent
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func waitFor(limit, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
