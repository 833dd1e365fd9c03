package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/logwatch"
)

// The tenant lab (TENANTS=1 scripts/lab.sh up): two cPanel accounts on the lab's Apache.
// alice.test's certificate names the lab's responder; mallory.test's names
// 127.0.0.1:DEAD_OCSP_PORT, where nothing listens, and mallory's docroot holds a CGI script
// (mod_cgid) and a PHP script (mod_php) that write what they are given raw to stderr, which is
// error_log (FACTS.md section 10). The tests prove on the real Apache what a customer can put in
// error_log, so that nothing downstream treats a line as proof on its own.

// apacheTime is Apache's default ErrorLogFormat timestamp (FACTS.md section 2).
const apacheTime = "Mon Jan 02 15:04:05.000000 2006"

// needTenantLab is needLab for what the tenant layer adds: mod_php (libapache2-mod-php8.2),
// mod_cgid and perl for the CGI script. Missing in CI is a failure, as in needLab.
func needTenantLab(t *testing.T) {
	t.Helper()
	for _, f := range []string{"/usr/lib/apache2/modules/libphp8.2.so", "/usr/lib/apache2/modules/mod_cgid.so", "/usr/bin/perl"} {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing in CI: %v", f, err)
			}
			t.Skipf("%s missing (apt-get install libapache2-mod-php8.2): %v", f, err)
		}
	}
}

// startTenantLab starts the lab with the tenant layer.
func startTenantLab(t *testing.T) *lab {
	t.Helper()
	needLab(t)
	needTenantLab(t)
	// The scripts run in Apache's children as www-data, which must be able to walk down to
	// the lab tree; t.TempDir's per-test directory is 0700. Every t.TempDir of a test lives in
	// that one directory, so make it now (this first one stays empty) and open it for
	// searching; startLab's tree is its next sibling.
	if err := os.Chmod(filepath.Dir(t.TempDir()), 0o711); err != nil {
		t.Fatal(err)
	}
	return startLab(t, "TENANTS=1")
}

// labEnv is a key of DIR/lab.env ("DEAD_OCSP_PORT").
func (l *lab) labEnv(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "lab.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok && v != "" {
			return v
		}
	}
	t.Fatalf("no %s in lab.env:\n%s", key, b)
	return ""
}

// forge makes mallory's code write line to its stderr: via "cgi" (cgi-bin/forge.cgi, the
// query string form-decoded) or "php" (forge.php, the "line" parameter to php://stderr). The
// script writes before it answers, so the line is in error_log when forge returns.
func (l *lab) forge(t *testing.T, via string, line string) {
	t.Helper()
	var target string
	switch via {
	case "cgi":
		target = "/cgi-bin/forge.cgi?" + url.QueryEscape(line)
	case "php":
		target = "/forge.php?line=" + url.QueryEscape(line)
	default:
		t.Fatalf("forge via %q: cgi or php", via)
	}
	// Over plain HTTP (the lab's mallory.test on HTTP_PORT, as on port 80 of a cPanel host): no
	// TLS handshake, so no staple is asked for and mod_ssl logs nothing of its own.
	addr := "127.0.0.1:" + l.labEnv(t, "HTTP_PORT")
	tr := &http.Transport{
		// The lab's names do not resolve: always dial the lab, and say mallory.test in Host.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get("http://mallory.test" + target)
	if err != nil {
		t.Fatalf("forge via %s: %v", via, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("forge via %s: %s %q %v\n%s", via, resp.Status, body, err, l.errorLog())
	}
}

// staple is one handshake to servername that asks for a staple (Go's client always sends
// status_request), verified against the lab CA; a failed handshake fails the test.
func (l *lab) staple(t *testing.T, servername string) handshake {
	t.Helper()
	h := l.handshake(servername)
	if h.err != nil {
		t.Fatalf("handshake with %s: %v", servername, h.err)
	}
	return h
}

// logLines is error_log split into lines (the last, unterminated piece dropped).
func (l *lab) logLines() []string {
	lines := strings.Split(l.errorLog(), "\n")
	return lines[:len(lines)-1]
}

// lineIndex is the index of the first error_log line, from first on, that is exactly want.
func lineIndex(lines []string, first int, want string) int {
	for i := first; i < len(lines); i++ {
		if lines[i] == want {
			return i
		}
	}
	return -1
}

// A customer's CGI script (mod_cgid) and PHP script (mod_php, php://stderr) each write a
// transport line and an AH01941 line, perfectly shaped, with a current timestamp. Both land
// at the start of an error_log line, byte for byte, and the classifier takes them for mod_ssl's:
// from the text alone nobody can tell who wrote a line.
func TestTenantCanForgeStaplingLines(t *testing.T) {
	l := startTenantLab(t)
	for _, via := range []string{"cgi", "php"} {
		t.Run(via, func(t *testing.T) {
			stamp := time.Now().Format(apacheTime)
			transport := fmt.Sprintf("[%s] [ssl:error] [pid 4242] (111)Connection refused: [client 127.0.0.1:40404] "+
				"AH01974: could not connect to OCSP responder 'ocsp.%s.forged.test'", stamp, via)
			failure := fmt.Sprintf("[%s] [ssl:error] [pid 4242] AH01941: stapling_renew_response: responder error", stamp)
			l.forge(t, via, transport)
			l.forge(t, via, failure)

			lines := l.logLines()
			ti := lineIndex(lines, 0, transport)
			fi := lineIndex(lines, ti+1, failure)
			if ti < 0 || fi < 0 {
				t.Fatalf("forged lines not whole lines of error_log (transport at %d, failure at %d):\n%s", ti, fi, l.errorLog())
			}

			ev := logwatch.Classify([]byte(lines[ti]))
			if ev.Kind != logwatch.KindTransport || ev.Cause != logwatch.CauseConnectRefused || ev.Proc != "4242" {
				t.Errorf("forged transport line classified %+v", ev)
			}
			ev = logwatch.Classify([]byte(lines[fi]))
			if ev.Kind != logwatch.KindResponderFailure || ev.Code != "AH01941" || ev.Proc != "4242" {
				t.Errorf("forged AH01941 classified %+v, want a responder failure", ev)
			}
			if d := time.Since(ev.Time); d < -time.Second || d > time.Minute {
				t.Errorf("forged timestamp read as %s (%s ago)", ev.Time, d)
			}
		})
	}
}

// A customer's certificate can name any responder: mallory.test's names a port on 127.0.0.1
// where nothing listens, and one staple request to mallory.test makes mod_ssl itself log a
// genuine AH01974 (connection refused, naming that address) and AH01941, while alice.test and
// shop.test, whose responder is up, staple fine.
func TestTenantCertificateNamesDeadResponder(t *testing.T) {
	l := startTenantLab(t)
	dead := "127.0.0.1:" + l.labEnv(t, "DEAD_OCSP_PORT")
	if c, err := net.DialTimeout("tcp", dead, time.Second); err == nil {
		c.Close()
		t.Fatalf("something listens on mallory's responder address %s", dead)
	}

	for _, name := range []string{"alice.test", "shop.test"} {
		if h := l.staple(t, name); !h.stapled {
			t.Fatalf("%s: no staple from a healthy responder\n%s", name, l.errorLog())
		}
	}
	if strings.Contains(l.errorLog(), "[ssl:error]") {
		t.Fatalf("mod_ssl errors before mallory.test was asked:\n%s", l.errorLog())
	}

	if h := l.staple(t, "mallory.test"); h.stapled {
		t.Fatalf("mallory.test stapled although its responder %s is dead", dead)
	}
	// mod_ssl logs during the handshake; poll for the lines anyway rather than assume when
	// the write reaches the file.
	var refused, failed logwatch.Event
	waitFor(t, "mod_ssl's AH01974 and AH01941 for "+dead, func() bool {
		refused, failed = logwatch.Event{}, logwatch.Event{}
		for _, line := range l.logLines() {
			ev := logwatch.Classify([]byte(line))
			switch {
			case ev.Kind == logwatch.KindTransport && ev.Code == "AH01974" && strings.Contains(line, "'"+dead+"'"):
				refused = ev
			case ev.Kind == logwatch.KindResponderFailure && refused.Kind != logwatch.KindNone && ev.Proc == refused.Proc:
				failed = ev
				return true
			}
		}
		return false
	})
	if refused.Cause != logwatch.CauseConnectRefused || refused.Status != "111" || failed.Code != "AH01941" {
		t.Fatalf("mallory's failure: %+v then %+v\n%s", refused, failed, l.errorLog())
	}
	if strings.Contains(l.errorLog(), "127.0.0.1:"+l.ocspPort) {
		t.Fatalf("an error names the healthy responder:\n%s", l.errorLog())
	}
	// The healthy vhosts are unaffected by mallory's responder.
	for _, name := range []string{"alice.test", "shop.test"} {
		if h := l.staple(t, name); !h.stapled {
			t.Fatalf("%s after mallory's failure: no staple", name)
		}
	}
}
