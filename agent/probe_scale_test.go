package agent

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/nettest"
	"github.com/stapling-agent/stapling-agent/agent/probe"
)

// --concurrency below 1 (or not a number) is bad usage: exit 3, one line saying what to
// pass, nothing on stdout, nothing probed.
func TestProbeConcurrencyFlag(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"0", "--concurrency 0: must be at least 1"},
		{"-4", "--concurrency -4: must be at least 1"},
		{"many", `invalid argument "many" for "--concurrency"`},
	} {
		t.Run(c.value, func(t *testing.T) {
			r := runAgent(t, nil, "probe", "--target", "127.0.0.1:1", "--concurrency", c.value)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code != ExitUnknown || r.stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 3 and one line with %q", r.code, r.stdout, r.stderr, c.want)
			}
		})
	}
	if r := runAgent(t, nil, "probe", "--target", "127.0.0.1:1", "--deadline", "0s"); r.code != ExitUnknown || !strings.Contains(r.stderr, "--deadline 0s") {
		t.Fatalf("--deadline 0s: %+v", r)
	}
	if r := runAgent(t, nil, "probe", "--target", "127.0.0.1:1", "--timeout", "0s"); r.code != ExitUnknown || !strings.Contains(r.stderr, "--timeout 0s") {
		t.Fatalf("--timeout 0s: %+v", r)
	}
}

// 50 vhost addresses that black-hole, through the command: with a 2 s --deadline the probe
// stops (a correctness bound, generous), reports each target exactly once, unreachable (with
// the timeout) or not_probed, says it is incomplete, and exits 1. With time enough and one
// slot a target, each is reported unreachable once and the report is complete.
func TestProbeCommandDeadlineBlackHoles(t *testing.T) {
	var args []string
	addrs := map[string]bool{}
	for i := 0; i < 50; i++ {
		a := nettest.BlackHole(t)
		addrs[a] = true
		args = append(args, "--target", a)
	}
	start := time.Now()
	code, rep := probeJSON(t, append(args, "--timeout", "1s", "--deadline", "2s", "--concurrency", "8")...)
	took := time.Since(start)
	if took > 2*time.Second+5*time.Second {
		t.Fatalf("the probe ran %s with --deadline 2s", took)
	}
	count := map[probe.Status]int{}
	seen := map[string]int{}
	for _, tg := range rep.Targets {
		seen[tg.Address]++
		count[tg.Status]++
		switch tg.Status {
		case probe.StatusUnreachable:
			if !strings.Contains(tg.Error, "timeout") || len(tg.Protocols) != 0 {
				t.Errorf("unreachable target: %+v", tg)
			}
		case probe.StatusNotProbed:
			if !strings.Contains(tg.Error, "deadline") {
				t.Errorf("not probed without the reason: %+v", tg)
			}
		default:
			t.Errorf("black hole reported %s: %+v", tg.Status, tg)
		}
	}
	for a := range addrs {
		if seen[a] != 1 {
			t.Errorf("%s reported %d times", a, seen[a])
		}
	}
	if code != ExitFailed || len(rep.Targets) != 50 || count[probe.StatusNotProbed] == 0 ||
		!strings.Contains(rep.Incomplete, fmt.Sprintf("stopped after --deadline 2s; %d of 50 targets and", count[probe.StatusNotProbed])) {
		t.Fatalf("exit %d, statuses %v, incomplete %q", code, count, rep.Incomplete)
	}

	code, rep = probeJSON(t, append(args, "--timeout", "500ms", "--deadline", "60s", "--concurrency", "50")...)
	for _, tg := range rep.Targets {
		if tg.Status != probe.StatusUnreachable {
			t.Errorf("with time enough: %+v", tg)
		}
	}
	if code != ExitFailed || len(rep.Targets) != 50 || rep.Incomplete != "" {
		t.Fatalf("with time enough: exit %d, %d targets, incomplete %q", code, len(rep.Targets), rep.Incomplete)
	}
}

// countingProxy forwards TCP connections to target and counts them: what a real server
// sees of the probe, without touching the server.
func countingProxy(t *testing.T, target string) (string, func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	addr := nettest.Serve(t, func(c net.Conn) {
		mu.Lock()
		n++
		mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
		_, _ = io.Copy(c, up)
	})
	return addr, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// On the real Apache with VHOSTS=20 (scripts/lab.sh), at --concurrency 4: every vhost is
// probed once, staples good, protocols as SSLProtocol says; the same vhost given twice (same
// address, name, no certificate) costs one set of handshakes through a counting proxy, and
// both are reported, each naming the other.
func TestE2EProbeManyVHosts(t *testing.T) {
	l := startLab(t, "VHOSTS=20", "STAPLING_CACHE=1024000")
	probeJSON(t, "--root", l.dir) // the first handshakes make mod_ssl fetch the staples
	code, rep := probeJSON(t, "--root", l.dir, "--concurrency", "4")
	if code != 0 || len(rep.Targets) != 21 || rep.Incomplete != "" {
		t.Fatalf("exit %d, %d targets, incomplete %q", code, len(rep.Targets), rep.Incomplete)
	}
	names := map[string]bool{}
	for _, tg := range rep.Targets {
		names[tg.ServerName] = true
		if tg.Status != probe.StatusProbed || !tg.Staple.Present || tg.Staple.CertStatus != "good" ||
			tg.Protocols["TLS1.0"] != "alert" || tg.Protocols["TLS1.1"] != "alert" || tg.Protocols["TLS1.2"] != "accepted" || tg.Protocols["TLS1.3"] != "accepted" ||
			tg.Certificate.MatchesConfigured == nil || !*tg.Certificate.MatchesConfigured {
			t.Errorf("%s: %+v", tg.ServerName, tg)
		}
	}
	for i := 1; i <= 20; i++ {
		if !names[fmt.Sprintf("site%d.test", i)] {
			t.Errorf("site%d.test not reported", i)
		}
	}

	proxy, conns := countingProxy(t, "127.0.0.1:"+l.httpsPort)
	if code, rep := probeJSON(t, "--target", proxy, "--servername", "site3.test"); code != 0 || len(rep.Targets) != 1 {
		t.Fatalf("one target: exit %d %+v", code, rep)
	}
	one := conns()
	code, rep = probeJSON(t, "--target", proxy, "--target", proxy, "--servername", "site3.test")
	if code != 0 || len(rep.Targets) != 2 || conns()-one != one {
		t.Fatalf("the same target twice: exit %d, %d connections (one target: %d), %+v", code, conns()-one, one, rep.Targets)
	}
	for _, tg := range rep.Targets {
		if strings.Join(tg.SharedWith, ",") != proxy+" site3.test" || !tg.Staple.Present {
			t.Errorf("shared target: %+v", tg)
		}
	}
}
