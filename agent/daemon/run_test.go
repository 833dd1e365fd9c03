package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/policy"
	"github.com/stapling-agent/stapling-agent/agent/state"
)

// mustStapleCert is a combined certificate file with the TLS Feature extension (status_request).
func mustStapleCert(t *testing.T) string {
	return fakehost.Cert(t, "ms.example", fakehost.Responder, true)
}

// running is Run in a goroutine with ticks the test sends, recording what it tells systemd.
type running struct {
	t                      *testing.T
	poll, watchdog, revert chan time.Time
	refresh                chan time.Time
	hup                    chan os.Signal
	notified               chan string
	cancel                 context.CancelFunc
	done                   chan error
}

func run(t *testing.T, d *Daemon) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, poll: make(chan time.Time), watchdog: make(chan time.Time), revert: make(chan time.Time), refresh: make(chan time.Time),
		hup: make(chan os.Signal), notified: make(chan string, 100), cancel: cancel, done: make(chan error, 1)}
	d.Notify = func(s string) { r.notified <- s }
	go func() {
		r.done <- d.Run(ctx, Ticks{Poll: r.poll, Watchdog: r.watchdog, Revert: r.revert, Refresh: r.refresh}, r.hup)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	r.expect("READY=1")
	return r
}

// send delivers a tick; the loop has taken it when send returns.
func send[T any](t *testing.T, c chan T, v T) {
	t.Helper()
	select {
	case c <- v:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not take a tick: it is blocked")
	}
}

func (r *running) expect(state string) {
	r.t.Helper()
	select {
	case got := <-r.notified:
		if got != state {
			r.t.Fatalf("notified %q, want %q", got, state)
		}
	case <-time.After(10 * time.Second):
		r.t.Fatalf("no %s", state)
	}
}

// blockingRestart makes the runner's "restart" wait until release is closed: a restart that
// takes longer than the watchdog interval.
func blockingRestart(h *fakehost.Host) (started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.Runner.Hook["restart"] = func() {
		once.Do(func() { close(started) })
		<-release
	}
	return started, release
}

// While a remediation waits on a slow restart, the loop keeps reading and keeps pinging the
// watchdog at every tick: systemd never kills the daemon in the middle of an Apache restart.
// On SIGTERM it says STOPPING=1 and returns only once the remediation has finished.
func TestRunWatchdogDuringRemediation(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	started, release := blockingRestart(r.Host)
	run := run(t, r.d)
	r.fail(3)
	send(t, run.poll, time.Now())
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no remediation started")
	}
	for i := 0; i < 5; i++ {
		r.fail(1) // lines keep being read and counted meanwhile
		send(t, run.poll, time.Now())
		send(t, run.watchdog, time.Now())
		run.expect("WATCHDOG=1")
	}
	if got := r.d.Failures.Load(); got != 8 {
		t.Fatalf("failures counted during the remediation: %d, want 8", got)
	}
	run.cancel()
	run.expect("STOPPING=1")
	// Stopping waits for the remediation; the watchdog is still answered meanwhile.
	send(t, run.poll, time.Now())
	send(t, run.watchdog, time.Now())
	run.expect("WATCHDOG=1")
	select {
	case err := <-run.done:
		t.Fatalf("Run returned during the remediation: %v", err)
	default:
	}
	close(release)
	select {
	case err := <-run.done:
		run.done <- err // for the cleanup
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the remediation finished")
	}
	if r.decisions() != "remediate" || r.Runner.Names() != "configtest,restart" {
		t.Fatalf("decisions %s, ran %s", r.decisions(), r.Runner.Names())
	}
}

// A hung read stops the pings: the watchdog is only answered while polls complete.
func TestRunWatchdogOnlyWhilePolling(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	run := run(t, r.d)
	send(t, run.poll, time.Now())
	send(t, run.watchdog, time.Now())
	run.expect("WATCHDOG=1")
	send(t, run.watchdog, time.Now()) // no poll since the last ping
	send(t, run.poll, time.Now())     // a barrier: the watchdog tick above is fully handled
	select {
	case s := <-run.notified:
		t.Fatalf("pinged %q without a poll", s)
	default:
	}
}

// SIGHUP rebuilds everything the configuration drives: policy, mode, commands, logger and
// state directory are those of the new environment from then on; a bad one keeps the old.
func TestRunReloadRebuildsEverything(t *testing.T) {
	r := newRig(t, policy.DryRunMode, "", nil)
	var logs syncBuffer
	next := r.Host.Env(t, func(c *config.Config) {
		c.Mode = policy.Enforce
		c.Policy.Spread = 0
		c.Policy.Threshold = 1
		c.Policy.Window = time.Minute
		c.StateDir = "/var/lib/other-state"
		c.Commands.Restart = []string{"restart-new"}
	})
	next.Log = zerolog.New(&logs)
	var reloadErr error
	r.d.reload = func() (*env.Env, error) { return next, reloadErr }
	run := run(t, r.d)

	reloadErr = os.ErrPermission
	send(t, run.hup, os.Signal(nil))
	send(t, run.poll, time.Now()) // barrier
	if r.d.env != r.env {
		t.Fatal("a failed reload replaced the environment")
	}
	reloadErr = nil
	send(t, run.hup, os.Signal(nil))
	r.fail(1) // threshold 1 now, and enforce
	send(t, run.poll, time.Now())
	waitFor(t, "the remediation with the new commands", func() bool { return strings.Contains(r.Runner.Names(), "restart-new") })
	if r.d.counter.Window != time.Minute {
		t.Fatalf("window %s", r.d.counter.Window)
	}
	entries, err := state.New(filepath.Join(r.Root, "/var/lib/other-state"), time.Now).Journal()
	if err != nil || len(entries) == 0 {
		t.Fatalf("the new state directory has no journal: %v", err)
	}
	waitFor(t, "the decision in the new logger", func() bool { return strings.Contains(logs.String(), `"decision":"remediate"`) })
	if !strings.Contains(logs.String(), "configuration reloaded") {
		t.Fatalf("new logger not used: %s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the daemon's goroutines and the test.
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The idle worker keeps the host facts current: after the config changes, a refresh tick reads
// it again, so the first decision of the next outage finds the facts read already (it walks
// nothing, whatever the size of the config).
func TestRunRefreshKeepsFactsCurrent(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	run := run(t, r.d)
	before := r.d.Readings.Load()
	fakehost.Write(t, r.Root, fakehost.EA4HTTPD, fakehost.WiredHTTPD+"# edited by the admin\n") // the config changed
	send(t, run.refresh, time.Now())
	waitFor(t, "the facts read anew", func() bool { return r.d.Readings.Load() == before+1 })
	r.fail(3)
	send(t, run.poll, time.Now())
	waitFor(t, "the decision", func() bool { return r.decisions() == "remediate" })
	if n := r.d.Readings.Load(); n != before+1 {
		t.Fatalf("the decision read the config again (%d readings): the refresh did not keep the facts current", n-before)
	}
}

// A file added where a wildcard include could read it changes no file read, only the
// directory: the facts are read anew for it too (and not without a change).
func TestRunRefreshSeesANewFile(t *testing.T) {
	r := newRig(t, policy.Enforce, "", nil)
	run := run(t, r.d)
	before := r.d.Readings.Load()
	send(t, run.refresh, time.Now())
	send(t, run.refresh, time.Now()) // the worker takes one job at a time: the first is done
	if n := r.d.Readings.Load(); n != before {
		t.Fatalf("%d readings without a change", n-before)
	}
	fakehost.Write(t, r.Root, "/etc/apache2/conf.d/includes/new.conf", "# new\n")
	send(t, run.refresh, time.Now())
	waitFor(t, "the facts read anew after a file appeared", func() bool { return r.d.Readings.Load() == before+1 })
}
