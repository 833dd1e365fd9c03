package agent

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/frontend"
)

// needNginx skips without Debian's nginx, except in CI (.ci/run installs it), like needLab.
func needNginx(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("nginx missing in CI: %v", err)
		}
		t.Skipf("/usr/sbin/nginx not installed (apt-get install nginx): %v", err)
	}
}

// get asks nginx on the public port for path as a browser would for servername.
func (l *lab) get(servername, path string) (*http.Response, string) {
	l.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: servername, RootCAs: l.roots}, DisableKeepAlives: true}}
	req, err := http.NewRequest("GET", "https://127.0.0.1:"+l.httpsPort+path, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	req.Host = servername
	resp, err := c.Do(req)
	if err != nil {
		l.t.Fatalf("GET %s through nginx: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp, string(body)
}

// Issue 13's test bed: Debian's nginx in front of the lab's Apache, laid out as ea-nginx
// lays it out (scripts/lab.sh FRONT=nginx), stapling on, then the responder down. nginx
// fetches staples in the background, so its handshakes are not delayed; it logs its own
// OCSP errors, which ClassifyNginx reads. Apache, moved to a backend port, logs AH01941 only
// for clients that reach that port directly (nginx's own connections to it ask for no
// staple). The audit names nginx as the front end, counts Apache's failures as backend_only
// and decides not_client_facing, and the daemon does not restart Apache for them.
func TestE2ENginxFrontEnd(t *testing.T) {
	needLab(t)
	needNginx(t)
	// Apache's children (www-data) serve the requests nginx proxies from the lab tree:
	// open t.TempDir's 0700 per-test directory for searching, as startTenantLab does.
	if err := os.Chmod(filepath.Dir(t.TempDir()), 0o711); err != nil {
		t.Fatal(err)
	}
	l := startLab(t, "FRONT=nginx")
	backend := l.labEnv(t, "APACHE_SSL_PORT")
	if backend == l.httpsPort {
		t.Fatalf("lab.env: APACHE_SSL_PORT %q, HTTPS_PORT %q", backend, l.httpsPort)
	}

	// Healthy. nginx answers its first handshake without a staple and fetches one in the
	// background; later handshakes carry it.
	waitFor(t, "nginx's first staple", func() bool {
		h := l.handshake("shop.test")
		return h.err == nil && h.stapled
	})
	var healthy []time.Duration
	for i := 0; i < 5; i++ {
		h := l.handshake("shop.test")
		if h.err != nil || !h.stapled {
			t.Fatalf("healthy handshake through nginx: %+v", h)
		}
		healthy = append(healthy, h.dur)
	}
	// Requests go through nginx to Apache (nginx does not pass Apache's Server header on).
	if resp, body := l.get("shop.test", "/index.html"); resp.StatusCode != 200 || body != "ok\n" || !strings.HasPrefix(resp.Header.Get("Server"), "nginx") {
		t.Fatalf("GET through nginx: %d %q, Server %q", resp.StatusCode, body, resp.Header.Get("Server"))
	}
	if n := strings.Count(l.errorLog(), "AH01941"); n != 0 {
		t.Fatalf("Apache logged %d AH01941 with the responder up:\n%s", n, l.errorLog())
	}

	// The outage. nginx keeps a staple it has until it expires and retries a failed fetch
	// only after 300 s (ngx_event_openssl_stapling.c), so a reload, which starts workers with
	// nothing cached, is what makes the next handshake fetch at once and fail.
	l.responderStop()
	l.nginxReload()
	var outage []time.Duration
	for i := 0; i < 6; i++ {
		h := l.handshake("shop.test")
		if h.err != nil || h.stapled {
			t.Fatalf("handshake through nginx during the outage: %+v", h)
		}
		outage = append(outage, h.dur)
	}
	var backendTimes []time.Duration
	for i := 0; i < 3; i++ {
		h := l.handshakeAt(backend, "shop.test")
		if h.err != nil || h.stapled {
			t.Fatalf("handshake on Apache's backend port during the outage: %+v", h)
		}
		backendTimes = append(backendTimes, h.dur)
	}
	t.Logf("handshakes on the public port (nginx): responder up %v; responder down %v; directly on Apache's backend port, responder down (refused) %v",
		healthy, outage, backendTimes)
	for _, d := range outage {
		// Generous: on the backend, Apache would wait up to SSLStaplingResponderTimeout (3 s)
		// for a responder that does not answer; nginx waits for nothing.
		if d > time.Second {
			t.Errorf("a handshake through nginx took %v during the outage: nginx should not wait for the responder", d)
		}
	}
	apacheFailures := strings.Count(l.errorLog(), "AH01941")
	if apacheFailures < 3 {
		t.Fatalf("Apache logged %d AH01941 for 3 direct handshakes:\n%s", apacheFailures, l.errorLog())
	}
	// Requests through nginx reach Apache over TLS without asking for a staple: no new AH01941.
	for i := 0; i < 3; i++ {
		if resp, body := l.get("shop.test", "/index.html"); resp.StatusCode != 200 || body != "ok\n" {
			t.Fatalf("GET through nginx during the outage: %d %q", resp.StatusCode, body)
		}
	}
	if n := strings.Count(l.errorLog(), "AH01941"); n != apacheFailures {
		t.Fatalf("requests through nginx made Apache log %d more AH01941", n-apacheFailures)
	}

	// nginx's own lines, as it wrote them, classified by the agent's reader.
	var failures []frontend.NginxEvent
	waitFor(t, "nginx to log the failed fetch", func() bool {
		failures = failures[:0]
		for _, line := range strings.Split(l.nginxErrorLog(), "\n") {
			if e := frontend.ClassifyNginx([]byte(line)); e.Kind == frontend.LogFailure {
				failures = append(failures, e)
			}
		}
		return len(failures) > 0
	})
	for _, line := range strings.Split(l.nginxErrorLog(), "\n") {
		if strings.Contains(line, "certificate status") || strings.Contains(line, "OCSP") {
			t.Logf("nginx wrote: %s (kind %s, cause %s)", line, frontend.ClassifyNginx([]byte(line)).Kind, frontend.ClassifyNginx([]byte(line)).Cause)
		}
	}
	for _, e := range failures {
		if e.Responder != "127.0.0.1" || e.Peer != "127.0.0.1:"+l.ocspPort || !strings.HasSuffix(e.Certificate, "/shop.test.combined") || e.Cause == "" {
			t.Errorf("nginx failure event: %+v", e)
		}
	}

	code, doc := auditJSON(t, l.dir)
	t.Logf("audit: exit %d, %s: %v", code, doc["status"], doc["summary"])
	field := func(path ...string) any {
		var v any = doc
		for _, k := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	num := func(path ...string) float64 {
		n, _ := field(path...).(float64)
		return n
	}
	if s := field("frontend", "server"); s != "nginx" {
		t.Errorf("frontend.server %v, want nginx (frontend: %v)", s, field("frontend"))
	}
	ports, _ := field("frontend", "apache_ports").([]any)
	if !slices.ContainsFunc(ports, func(p any) bool { return fmt.Sprint(p) == backend }) {
		t.Errorf("frontend.apache_ports %v lacks Apache's backend port %s", field("frontend", "apache_ports"), backend)
	}
	if n := num("failures", "backend_only"); n <= 0 {
		t.Errorf("failures.backend_only %v, want Apache's %d AH01941 (failures: %v)", field("failures", "backend_only"), apacheFailures, field("failures"))
	}
	if n := num("nginx", "failures", "total"); n <= 0 {
		t.Errorf("nginx.failures.total %v, want > 0 (nginx: %v)", field("nginx", "failures", "total"), field("nginx"))
	}
	if bc, _ := field("nginx", "failures", "by_cause").(map[string]any); len(bc) == 0 {
		t.Errorf("nginx.failures.by_cause %v, want non-empty", field("nginx", "failures", "by_cause"))
	}
	if k := field("policy", "decision", "kind"); k != "not_client_facing" {
		t.Errorf("policy.decision.kind %v, want not_client_facing (policy: %v)", k, field("policy"))
	}
	if doc["status"] == "critical" || code == 2 {
		t.Errorf("audit critical (exit %d) with nginx in front: %v", code, doc["summary"])
	}

	// The daemon over the outage: it replays Apache's failures and does not restart Apache.
	include, before := l.include(), l.restarts()
	d := l.startDaemon()
	waitFor(t, "the daemon's decision", func() bool { return strings.Contains(d.stderr.String(), `"decision":"not_client_facing"`) })
	d.stop(t)
	if strings.Contains(d.stderr.String(), `"decision":"remediate"`) || l.restarts() != before || l.include() != include {
		t.Fatalf("the daemon acted behind nginx: restarts %d -> %d, include changed %v\n%s",
			before, l.restarts(), l.include() != include, d.stderr.String())
	}

	// probe without --target: what visitors reach (nginx's SSL servers) as the front end, and
	// Apache's vhosts separately as the backend.
	_, rep := probeJSON(t, "--root", l.dir, "--timeout", "2s")
	roles := map[string]string{}
	for _, tg := range rep.Targets {
		roles[tg.Address+" "+tg.ServerName] = tg.Role
	}
	if roles["127.0.0.1:"+l.httpsPort+" shop.test"] != "frontend" || roles["127.0.0.1:"+backend+" shop.test"] != "backend" {
		t.Fatalf("probe targets and roles: %v", roles)
	}

	// The delay. A refused responder fails fast for both servers; a black-holed one is what
	// stalls Apache's handshakes for SSLStaplingResponderTimeout (3 s). nginx's fetch waits
	// too (60 s, fixed), but in the background: its handshakes do not.
	l.hangResponder()
	l.nginxReload()
	var hung []time.Duration
	for i := 0; i < 5; i++ {
		h := l.handshake("shop.test")
		if h.err != nil || h.stapled || h.dur > time.Second {
			t.Fatalf("handshake through nginx with the responder black-holed: %+v", h)
		}
		hung = append(hung, h.dur)
	}
	direct := l.handshakeAt(backend, "shop.test")
	if direct.err != nil || direct.dur < 2500*time.Millisecond {
		t.Fatalf("handshake on Apache's backend port with the responder black-holed: %+v (expected to wait ~3 s)", direct)
	}
	t.Logf("responder black-holed: handshakes on the public port (nginx) %v; directly on Apache's backend port %v", hung, direct.dur)
}
