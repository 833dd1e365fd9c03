package probe_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// The address and SNI name the probe uses for each vhost shape cPanel writes (and an admin's
// own): IPv6 and dual-stack vhosts, `*:443` with a wildcard alias, wildcard subdomains in both
// of cPanel's encodings, the proxy-subdomain vhost with its suffix patterns.
func TestTargetsOfCPanelShapes(t *testing.T) {
	shapes := fakehost.Shapes(false)
	h := fakehost.New(t, "ea4", fakehost.ShapesFiles(t, shapes))
	cfg, err := apacheconf.ReadConfig(h.Layout)
	if err != nil {
		t.Fatal(err)
	}
	targets := probe.Targets(h.Layout, cfg, 0)
	if len(targets) != len(shapes) {
		t.Fatalf("%d targets for %d SSL vhosts: %+v", len(targets), len(shapes), targets)
	}
	for i, s := range shapes {
		tg := targets[i]
		if tg.Address != s.Address || tg.ServerName != s.SNI {
			t.Errorf("%s: probed at %s with SNI %q, want %s %q", s.ServerName, tg.Address, tg.ServerName, s.Address, s.SNI)
		}
		if tg.Configured == nil || !strings.Contains(strings.Join(tg.Configured.Leaf.DNSNames, " "), s.CertName) {
			t.Errorf("%s: configured certificate %+v, want %s's", s.ServerName, tg.Configured, s.CertName)
		}
		if strings.ContainsAny(tg.ServerName, "*?") {
			t.Errorf("%s: SNI %q is a pattern, not a name a client sends", s.ServerName, tg.ServerName)
		}
	}
}

func TestTargetAddress(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10:443":     "192.0.2.10:443",
		"[2001:db8::10]:443": "[2001:db8::10]:443",
		"[2001:db8::10]":     "[2001:db8::10]:443", // no port: was "[[2001:db8::10]]:443"
		"[::1]:8443":         "[::1]:8443",
		"*:443":              "127.0.0.1:443",
		"*":                  "127.0.0.1:443",
		"*:*":                "127.0.0.1:443",
		"_default_:443":      "127.0.0.1:443",
		"0.0.0.0:443":        "127.0.0.1:443",
		"[::]:443":           "[::1]:443",
		"192.0.2.10":         "192.0.2.10:443",
	} {
		if got := probe.TargetAddress(in); got != want {
			t.Errorf("TargetAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSNIName(t *testing.T) {
	cases := []struct {
		name       string
		serverName string
		aliases    []string
		want       string
	}{
		{"plain", "shop.example", []string{"www.shop.example"}, "shop.example"},
		{"cPanel's wildcard subdomain", "_wildcard_.example.com", []string{"*.example.com"}, "_wildcard_.example.com"},
		{"older cPanel's wildcard subdomain", "wildcard_safe.example.com", []string{"*.example.com"}, "wildcard_safe.example.com"},
		{"pattern ServerName, plain alias", "*.example.com", []string{"*.example.com", "shop.example.com"}, "shop.example.com"},
		{"pattern ServerName, pattern alias", "*.example.com", []string{"*.example.com"}, "stapling-agent-probe.example.com"},
		{"pattern ServerName alone", "*.example.com", nil, "stapling-agent-probe.example.com"},
		{"question mark", "w?w.example.com", nil, "wxw.example.com"},
		{"proxy subdomains keep the ServerName", "host.example", []string{"cpanel.*", "whm.*"}, "host.example"},
		{"ServerName with scheme and port", "https://www.example.com:443", nil, "www.example.com"},
		{"ServerName with port", "www.example.com:8443", nil, "www.example.com"},
		{"no ServerName, plain alias", "", []string{"www.example.com"}, "www.example.com"},
		{"no ServerName, pattern alias", "", []string{"*.example.com"}, "stapling-agent-probe.example.com"},
		{"none", "", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := probe.SNIName(apacheconf.VHost{ServerName: c.serverName, Aliases: c.aliases}); got != c.want {
				t.Fatalf("SNIName(%q, %q) = %q, want %q", c.serverName, c.aliases, got, c.want)
			}
		})
	}
}

// sniServer is a TLS server on one or more addresses choosing the certificate as mod_ssl
// chooses the vhost (ServerName exactly, then aliases, patterns matched as patterns), and
// recording each SNI name with the address it arrived on.
type sniServer struct {
	mu    sync.Mutex
	seen  []string
	certs map[string]tls.Certificate // ServerName or alias pattern -> certificate
}

func (s *sniServer) serve(t *testing.T, ln net.Listener) {
	cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.mu.Lock()
		s.seen = append(s.seen, h.Conn.LocalAddr().String()+" "+h.ServerName)
		s.mu.Unlock()
		if c, ok := s.certs[h.ServerName]; ok {
			return &c, nil
		}
		for p, c := range s.certs {
			if ok, _ := path.Match(p, h.ServerName); ok {
				return &c, nil
			}
		}
		return nil, fmt.Errorf("no vhost for %q", h.ServerName)
	}}
	tl := tls.NewListener(ln, cfg)
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
}

// serverCert is a self-signed certificate for dnsName with its key, and the PEM of the
// certificate (the "configured" file).
func serverCert(t *testing.T, dnsName string) (tls.Certificate, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// The probe against live listeners: a dual-stack vhost is reached on its IPv6 address, a
// `*` vhost named only by a wildcard ServerAlias on 127.0.0.1, each with an SNI name a client
// sends (never a pattern), the
// certificate the server picks for that name is the configured one, and the hostname check
// passes (only the self-signed chain fails).
func TestProbeShapesOnLiveListeners(t *testing.T) {
	v6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	port := v6.Addr().(*net.TCPAddr).Port
	v4, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		v6.Close()
		t.Skipf("port %d is taken on 127.0.0.1: %v", port, err)
	}
	srv := &sniServer{certs: map[string]tls.Certificate{}}
	files := map[string]string{}
	for _, c := range []struct{ key, name, file string }{
		{"v6.example", "v6.example", "/etc/apache2/ssl/v6.pem"},
		{"*.wild.example", "*.wild.example", "/etc/apache2/ssl/wild.pem"},
		{"*.lit.example", "*.lit.example", "/etc/apache2/ssl/lit.pem"},
	} {
		cert, pemText := serverCert(t, c.name)
		srv.certs[c.key] = cert
		files[c.file] = pemText
	}
	srv.serve(t, v6)
	srv.serve(t, v4)
	files[fakehost.EA4HTTPD] = fakehost.LoadModules + "SSLUseStapling on\n" + fmt.Sprintf(`<VirtualHost [::1]:%[1]d 127.0.0.1:%[1]d>
  ServerName v6.example
  SSLEngine on
  SSLCertificateFile /etc/apache2/ssl/v6.pem
</VirtualHost>
<VirtualHost 127.0.0.1:%[1]d>
  ServerName _wildcard_.wild.example
  ServerAlias *.wild.example
  SSLEngine on
  SSLCertificateFile /etc/apache2/ssl/wild.pem
</VirtualHost>
<VirtualHost *:%[1]d>
  ServerAlias *.lit.example
  SSLEngine on
  SSLCertificateFile /etc/apache2/ssl/lit.pem
</VirtualHost>
`, port)
	h := fakehost.New(t, "ea4", files)
	cfg, err := apacheconf.ReadConfig(h.Layout)
	if err != nil {
		t.Fatal(err)
	}
	rep := probe.Run(context.Background(), probe.Targets(h.Layout, cfg, 0), 5*time.Second)
	want := []struct{ addr, sni string }{
		{fmt.Sprintf("[::1]:%d", port), "v6.example"},
		{fmt.Sprintf("127.0.0.1:%d", port), "_wildcard_.wild.example"},
		{fmt.Sprintf("127.0.0.1:%d", port), "stapling-agent-probe.lit.example"},
	}
	if len(rep.Targets) != len(want) {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	for i, w := range want {
		tg := rep.Targets[i]
		if tg.Address != w.addr || tg.ServerName != w.sni || tg.Error != "" {
			t.Errorf("target %d: %s %q error %q, want %s %q", i, tg.Address, tg.ServerName, tg.Error, w.addr, w.sni)
			continue
		}
		if tg.Certificate.MatchesConfigured == nil || !*tg.Certificate.MatchesConfigured {
			t.Errorf("%s: the server presented %s, not the configured certificate", w.sni, tg.Certificate.Subject)
		}
		// The name is checked before the chain: a self-signed chain fails, the name must not.
		if strings.Contains(tg.Certificate.Chain, "valid for") || !strings.Contains(tg.Certificate.Chain, "unknown authority") {
			t.Errorf("%s: chain %q", w.sni, tg.Certificate.Chain)
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	seen := strings.Join(srv.seen, "\n")
	for _, w := range want {
		if !strings.Contains(seen, w.addr+" "+w.sni) {
			t.Errorf("the server never saw SNI %q on %s:\n%s", w.sni, w.addr, seen)
		}
	}
	if strings.Contains(seen, "*") {
		t.Errorf("a pattern was sent as SNI:\n%s", seen)
	}
}
