package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// shapesLab is the lab with SHAPES=1 (scripts/lab.sh): an IPv6 vhost, a wildcard subdomain,
// cPanel's own per-vhost `SSLUseStapling off`, the proxy-subdomain vhost, `*:PORT` vhosts.
type shapesLab struct {
	*lab
	anyPort string
	ipv6    bool
}

func startShapesLab(t *testing.T) *shapesLab {
	t.Helper()
	l := &shapesLab{lab: startLab(t, "SHAPES=1")}
	env, _ := os.ReadFile(filepath.Join(l.dir, "lab.env"))
	for _, line := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(line, "ANY_PORT="); ok {
			l.anyPort = v
		}
		if v, ok := strings.CutPrefix(line, "IPV6="); ok {
			l.ipv6 = v == "1"
		}
	}
	if l.anyPort == "" {
		t.Fatalf("lab.env lacks ANY_PORT:\n%s", env)
	}
	if !l.ipv6 {
		t.Log("no ::1 on this machine: the lab left v6.test out, and so does this test")
	}
	return l
}

// seen is what a client sees in one handshake: the certificate's CN, whether it is valid for
// the name asked (the chain is always checked against the lab CA), whether a staple came.
type seen struct {
	cn      string
	nameOK  bool
	stapled bool
	err     error
}

// dial handshakes as a browser does, asking for a staple; twice, as the first handshake
// after a restart makes mod_ssl fetch the staple.
func (l *shapesLab) dial(addr, sni string) seen {
	var s seen
	for i := 0; i < 2; i++ {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			return seen{err: err}
		}
		cs := c.ConnectionState()
		c.Close()
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: l.roots}); err != nil {
			return seen{err: err}
		}
		s = seen{cn: leaf.Subject.CommonName, nameOK: leaf.VerifyHostname(sni) == nil, stapled: len(cs.OCSPResponse) > 0}
	}
	return s
}

// What a client sees on the real Apache for each shape, and that the agent's audit, probe
// and policy read the same: IPv6 and dual-stack, a wildcard subdomain as cPanel writes it,
// cPanel's own `SSLUseStapling off`, the proxy-subdomain vhost with suffix patterns, `*:PORT`.
func TestE2ECPanelShapes(t *testing.T) {
	l := startShapesLab(t)
	https, anyAddr := "127.0.0.1:"+l.httpsPort, "127.0.0.1:"+l.anyPort
	v6 := "[::1]:" + l.httpsPort
	type shapeCase struct {
		addr, sni, cn   string
		nameOK, stapled bool
	}
	cases := []shapeCase{
		{https, "shop.test", "shop.test", true, true},
		// A client of any name under the wildcard lands on the wildcard subdomain's vhost
		// (ServerAlias *.wild.test), and so does the probe's name for it, cPanel's encoded
		// ServerName; the *.wild.test certificate verifies for both.
		{https, "blog.wild.test", "*.wild.test", true, true},
		{https, "_wildcard_.wild.test", "*.wild.test", true, true},
		// cPanel's own `SSLUseStapling off`: no staple, while stapling is on globally.
		{https, "noocsp.test", "noocsp.test", true, false},
		// The proxy-subdomain vhost: `ServerAlias cpanel.*` is a suffix pattern.
		{https, "cpanel.shop.test", "host.test", false, false},
		// `*:PORT`: the first vhost is the default for a name no vhost has; a wildcard
		// ServerAlias there works as anywhere (star.test's certificate: star.test, *.star.test).
		{anyAddr, "any.test", "any.test", true, true},
		{anyAddr, "unknown.test", "any.test", false, true},
		{anyAddr, "x.star.test", "star.test", true, true},
	}
	if l.ipv6 {
		cases = append(cases,
			shapeCase{v6, "v6.test", "v6.test", true, true},
			// One vhost on both addresses: the IPv4 one serves it too.
			shapeCase{https, "v6.test", "v6.test", true, true},
			// On [::1] only v6.test and host.test are bound: the wildcard subdomain is not
			// there, and the address's first vhost answers, with a certificate not valid for
			// the name (Apache picks the address first, then the name).
			shapeCase{v6, "blog.wild.test", "v6.test", false, true},
			shapeCase{"[::1]:" + l.anyPort, "any.test", "any.test", true, true},
		)
	}
	for _, c := range cases {
		if s := l.dial(c.addr, c.sni); s.err != nil || s.cn != c.cn || s.nameOK != c.nameOK || s.stapled != c.stapled {
			t.Errorf("%s SNI %s: %+v; want CN %q valid for the name %v stapled %v", c.addr, c.sni, s, c.cn, c.nameOK, c.stapled)
		}
	}
	if log := l.errorLog(); strings.Contains(log, "AH02218") || strings.Contains(log, "AH02604") {
		t.Errorf("cPanel's per-vhost off should keep mod_ssl from setting up stapling for certificates without an OCSP URL:\n%s", log)
	}

	// The probe: one target per SSL vhost, at the address and with the name above.
	code, rep := probeJSON(t, "--root", l.dir)
	type want struct {
		addr, sni string
		stapled   bool
	}
	wants := []want{
		{https, "shop.test", true},
		{https, "_wildcard_.wild.test", true},
		{https, "noocsp.test", false},
		{anyAddr, "any.test", true},
		{anyAddr, "star.test", true},
		{https, "host.test", false},
	}
	if l.ipv6 {
		wants = slices.Insert(wants, 1, want{v6, "v6.test", true})
	}
	if code != 0 || len(rep.Targets) != len(wants) {
		t.Fatalf("probe: exit %d, %d targets: %+v", code, len(rep.Targets), rep.Targets)
	}
	for i, w := range wants {
		tg := rep.Targets[i]
		if tg.Address != w.addr || tg.ServerName != w.sni || tg.Error != "" || tg.Staple.Present != w.stapled ||
			tg.Certificate.MatchesConfigured == nil || !*tg.Certificate.MatchesConfigured {
			t.Errorf("probe target %d: %s %q error %q staple %v matches %v; want %s %q staple %v, the configured certificate",
				i, tg.Address, tg.ServerName, tg.Error, tg.Staple.Present, tg.Certificate.MatchesConfigured, w.addr, w.sni, w.stapled)
		}
	}

	// The audit: Apache (-S, DUMP_CONFIG through mod_info) agrees with the reading; cPanel's
	// offs are counted, not listed; effective on.
	_, doc := auditJSON(t, l.dir)
	ap := doc["apache"].(map[string]any)
	if ap["asked"] != true || ap["dump_config"] != true || ap["disagreement"] != nil {
		t.Fatalf("apache: %v", ap)
	}
	st := doc["stapling"].(map[string]any)
	var offs []string
	for _, o := range st["overrides"].([]any) {
		o := o.(map[string]any)
		if o["value"] != "off" {
			t.Errorf("override %v", o)
		}
		offs = append(offs, o["vhost"].(string))
	}
	if st["effective"] != "on" || strings.Join(offs, ",") != "noocsp.test,host.test" {
		t.Fatalf("stapling: %v", st)
	}
	if r := runAgent(t, nil, "--root", l.dir, "audit"); !strings.Contains(r.stdout, "  2 vhosts set SSLUseStapling off themselves") ||
		strings.Contains(r.stdout, "vhost host.test sets") {
		t.Fatalf("text audit:\n%s", r.stdout)
	}

	// An outage seen through the IPv6 and the wildcard vhosts: mod_ssl logs `[client ::1:PORT]`;
	// the audit counts every failure and attributes the responder to the vhosts and accounts
	// whose certificates name it.
	l.responderStop()
	l.restart()
	names := []struct{ addr, sni string }{{https, "blog.wild.test"}, {anyAddr, "any.test"}, {https, "blog.wild.test"}}
	if l.ipv6 {
		names = append(names, struct{ addr, sni string }{v6, "v6.test"})
	}
	for _, n := range names {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", n.addr, &tls.Config{ServerName: n.sni, RootCAs: l.roots})
		if err != nil {
			t.Fatalf("%s %s during the outage: %v", n.addr, n.sni, err)
		}
		c.Close()
	}
	log := l.errorLog()
	if l.ipv6 && !strings.Contains(log, "[client ::1:") {
		t.Fatalf("no failure logged for an IPv6 client:\n%s", log)
	}
	code, doc = auditJSON(t, l.dir)
	f := doc["failures"].(map[string]any)
	if want := float64(strings.Count(log, "AH01941")); code != 2 || f["total"] != want || want < 3 {
		t.Fatalf("audit during the outage: exit %d, failures %v, %v AH01941 in the log", code, f, want)
	}
	aff := doc["policy"].(map[string]any)["decision"].(map[string]any)["affected"].(map[string]any)
	var vhosts []string
	for _, v := range aff["vhosts"].([]any) {
		vhosts = append(vhosts, v.(string))
	}
	sort.Strings(vhosts)
	wantV := []string{"_wildcard_.wild.test", "any.test", "shop.test", "star.test"}
	if l.ipv6 {
		wantV = append(wantV, "v6.test")
	}
	sort.Strings(wantV)
	if !slices.Equal(vhosts, wantV) || !strings.Contains(fmtList(aff["accounts"]), "wild") {
		t.Fatalf("affected: %v", aff)
	}

	// The fix reaches every shape: after remediate no vhost staples and no handshake adds an
	// AH01941; the verification handshakes named the IPv6 vhost.
	r := runAgent(t, nil, "--root", l.dir, "remediate")
	if r.code != 0 || (l.ipv6 && !strings.Contains(r.stdout, " v6.test ")) {
		t.Fatalf("remediate: %+v", r)
	}
	before := strings.Count(l.errorLog(), "AH01941")
	for _, c := range cases {
		if s := l.dial(c.addr, c.sni); s.err != nil || s.cn != c.cn || s.stapled {
			t.Errorf("after remediate, %s %s: %+v", c.addr, c.sni, s)
		}
	}
	if after := strings.Count(l.errorLog(), "AH01941"); after != before {
		t.Fatalf("%d new AH01941 after remediate", after-before)
	}
}

func fmtList(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
