package frontend

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/stapling-agent/stapling-agent/logwatch"
)

// nginxBin is Debian's nginx; CI installs it.
const nginxBin = "/usr/sbin/nginx"

func needNginx(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(nginxBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed, and CI must run the real-nginx tests: %v", nginxBin, err)
		}
		t.Skipf("%s not installed (apt-get install nginx): %v", nginxBin, err)
	}
}

// testCA is a CA and the leaves it signs for the real-nginx tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "frontend test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf writes NAME.pem (leaf then CA, as nginx wants the chain) and NAME.key into dir.
func (ca *testCA) leaf(t *testing.T, dir, name string, serial int64, ocspURL string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		OCSPServer:   []string{ocspURL},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...)
	if err := os.WriteFile(certPath, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// ocspResponder answers every request for ca's leaves: good, or revoked for the serials in revoked.
func (ca *testCA) responder(t *testing.T, revoked map[int64]bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Method == http.MethodPost {
			body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<16))
		} else {
			// nginx sends GET /<base64, URL-escaped>
			b, err := decodeOCSPPath(r.URL.EscapedPath())
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = b
		}
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		status := ocsp.Good
		if revoked[req.SerialNumber.Int64()] {
			status = ocsp.Revoked
		}
		resp, err := ocsp.CreateResponse(ca.cert, ca.cert, ocsp.Response{
			Status: status, SerialNumber: req.SerialNumber, ThisUpdate: time.Now().Add(-time.Minute),
			NextUpdate: time.Now().Add(time.Hour), RevokedAt: time.Now().Add(-time.Hour),
		}, crypto.Signer(ca.key))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

func decodeOCSPPath(p string) ([]byte, error) {
	s := strings.TrimPrefix(p, "/")
	s, err := url.PathUnescape(s)
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(s)
}

// closedPort returns a local TCP port nothing listens on (it was just released).
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// nxdomainServer answers every DNS query over UDP with NXDOMAIN: nginx's resolver then
// logs "HOST could not be resolved (3: Host not found)".
func nxdomainServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			resp := append([]byte{}, buf[:n]...)
			flags := binary.BigEndian.Uint16(resp[2:4])
			flags |= 0x8000        // QR
			flags = flags&^0xf | 3 // RCODE NXDOMAIN
			flags |= 0x0080        // RA
			binary.BigEndian.PutUint16(resp[2:4], flags)
			binary.BigEndian.PutUint16(resp[6:8], 0)   // ANCOUNT
			binary.BigEndian.PutUint16(resp[8:10], 0)  // NSCOUNT
			binary.BigEndian.PutUint16(resp[10:12], 0) // ARCOUNT
			// Drop any EDNS OPT record after the question: answer the question only.
			if q := questionEnd(resp); q > 0 {
				resp = resp[:q]
			}
			pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

func questionEnd(m []byte) int {
	i := 12
	for i < len(m) && m[i] != 0 {
		i += int(m[i]) + 1
	}
	if i+5 > len(m) {
		return -1
	}
	return i + 5
}

// runNginx starts nginx in the foreground with its own prefix; Cleanup stops and reaps it.
func runNginx(t *testing.T, prefix, conf string, waitAddr string) {
	t.Helper()
	cmd := exec.Command(nginxBin, "-p", prefix+"/", "-c", conf, "-e", filepath.Join(prefix, "startup.log"), "-g", "daemon off;")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown, workers exit too
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", waitAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("nginx exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s: %s", waitAddr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nginxPrefixConf is the part of every test config that keeps nginx inside its prefix.
func nginxPrefixConf(prefix string) string {
	return fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
`, prefix)
}

const nginxTempPaths = `
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    access_log off;
`

// handshake connects with SNI name, asks for a staple (crypto/tls always does) and returns
// the time the handshake took and the staple, if any.
func handshake(t *testing.T, addr, name string) (time.Duration, []byte) {
	t.Helper()
	start := time.Now()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake %s: %v", name, err)
	}
	d := time.Since(start)
	st := c.ConnectionState()
	c.Close()
	return d, st.OCSPResponse
}

// TestRealNginxStaplingLines runs Debian's nginx with stapling on for five certificates
// whose responders are refused, unresolvable through nginx's resolver, reached without a
// resolver, healthy and revoking, and checks ClassifyNginx against the lines nginx wrote,
// and that handshakes during the outage are not stalled.
func TestRealNginxStaplingLines(t *testing.T) {
	needNginx(t) // 0.3 s: not skipped under -short
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	good := ca.responder(t, map[int64]bool{15: true})
	refusedPort := closedPort(t)
	noResPort := closedPort(t)
	dns := nxdomainServer(t)

	refused, refusedKey := ca.leaf(t, dir, "refused.test", 11, fmt.Sprintf("http://127.0.0.1:%d/", refusedPort))
	// "localhost" resolves at start-up (nginx resolves the responder with getaddrinfo when
	// it reads the certificate; a name that does not resolve then switches stapling off),
	// but nginx's own resolver asks our NXDOMAIN server at fetch time.
	dnsFail, dnsKey := ca.leaf(t, dir, "dns.test", 12, fmt.Sprintf("http://localhost:%d/", closedPort(t)))
	noRes, noResKey := ca.leaf(t, dir, "nores.test", 13, fmt.Sprintf("http://localhost:%d/", noResPort))
	healthy, healthyKey := ca.leaf(t, dir, "healthy.test", 14, good)
	revoked, revokedKey := ca.leaf(t, dir, "revoked.test", 15, good)

	// A responder that accepts and never answers: the fetch hangs for nginx's fixed 60 s
	// (staple->timeout, not configurable), the case that stalls Apache.
	hole := blackhole(t)
	blackholed, blackholedKey := ca.leaf(t, dir, "blackhole.test", 16, "http://"+hole+"/")

	port := closedPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	server := func(name, cert, key, extra string) string {
		return fmt.Sprintf(`
    server {
        listen %s ssl;
        server_name %s;
        ssl_certificate %s;
        ssl_certificate_key %s;
        root %s/www;
        %s
    }
`, addr, name, cert, key, dir, extra)
	}
	conf := nginxPrefixConf(dir) + "http {\n" + fmt.Sprintf(nginxTempPaths, dir) +
		"    ssl_stapling on;\n" +
		server("refused.test", refused, refusedKey, "resolver "+dns+" valid=1s; resolver_timeout 2s;") +
		server("dns.test", dnsFail, dnsKey, "resolver "+dns+" valid=1s; resolver_timeout 2s;") +
		server("nores.test", noRes, noResKey, "") +
		server("healthy.test", healthy, healthyKey, "resolver "+dns+";") +
		server("revoked.test", revoked, revokedKey, "resolver "+dns+";") +
		server("blackhole.test", blackholed, blackholedKey, "") +
		"}\n"
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Our reading of the same file says what nginx should do.
	cfg, err := ReadNginxConfig(context.Background(), "/", confPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.Servers {
		if !s.Stapling || !s.SSL {
			t.Errorf("%v: stapling %v ssl %v, want both on (inherited from http)", s.Names, s.Stapling, s.SSL)
		}
	}
	runNginx(t, dir, confPath, addr)

	// Hostile: client text shaped like a stapling line, in the URI, Referer and User-Agent.
	forged := `OCSP responder timed out (110: Connection timed out) while requesting certificate status, responder: evil.example, peer: 6.6.6.6:80, certificate: "/evil.pem"`
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "healthy.test", InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	req, _ := http.NewRequest("GET", "https://"+addr+"/"+strings.ReplaceAll(forged, " ", "%20"), nil)
	req.Host = "healthy.test"
	req.Header.Set("Referer", "x\" "+forged)
	req.Header.Set("User-Agent", forged)
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		// 404, or 403 where the workers (user nobody) may not enter the test's directory:
		// both log the open() failure with the URI.
		if resp.StatusCode != 404 && resp.StatusCode != 403 {
			t.Errorf("forged request: status %d, want 404 or 403", resp.StatusCode)
		}
	}
	hc.CloseIdleConnections()

	// The first handshake per certificate starts the fetch; nginx answers it without a
	// staple and without waiting.
	names := []string{"refused.test", "dns.test", "nores.test", "healthy.test", "revoked.test", "blackhole.test"}
	for _, n := range names {
		d, staple := handshake(t, addr, n)
		t.Logf("first handshake %s: %v, staple %d bytes", n, d, len(staple))
	}
	logPath := filepath.Join(dir, "error.log")
	want := map[string]func(NginxEvent) bool{
		"refused": func(e NginxEvent) bool {
			return e.Kind == LogFailure && e.Cause == CauseClosed && e.Certificate == refused && e.Responder == "127.0.0.1" &&
				e.Peer == fmt.Sprintf("127.0.0.1:%d", refusedPort)
		},
		"dns": func(e NginxEvent) bool {
			return e.Kind == LogFailure && e.Cause == logwatch.CauseDNS && e.Certificate == dnsFail && e.Responder == "localhost" && e.Errno == "3"
		},
		"nores-note": func(e NginxEvent) bool {
			return e.Kind == LogNote && e.Cause == CauseNoResolver && e.Certificate == noRes && e.Level == "warn"
		},
		"nores-refused": func(e NginxEvent) bool {
			return e.Kind == LogFailure && e.Cause == CauseClosed && e.Certificate == noRes && e.Peer == fmt.Sprintf("127.0.0.1:%d", noResPort)
		},
		"revoked": func(e NginxEvent) bool {
			return e.Kind == LogCertStatus && e.Status == "revoked" && e.Certificate == revoked
		},
	}
	var events []NginxEvent
	deadline := time.Now().Add(15 * time.Second)
	for {
		events = events[:0]
		if _, err := ScanNginxLog(context.Background(), logPath, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), func(e NginxEvent) { events = append(events, e) }); err != nil {
			t.Fatal(err)
		}
		missing := []string{}
		for name, ok := range want {
			hit := false
			for _, e := range events {
				hit = hit || ok(e)
			}
			if !hit {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(logPath)
			t.Fatalf("no event for %v; events %+v; log:\n%s", missing, events, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, "OCSP") || strings.Contains(line, "resolve") || strings.Contains(line, "evil") || strings.Contains(line, "connect()") {
			t.Logf("nginx wrote: %s (kind %s)", line, ClassifyNginx([]byte(line)).Kind)
		}
	}
	for _, e := range events {
		if strings.Contains(e.Responder, "evil") || strings.Contains(e.Certificate, "evil") {
			t.Errorf("client text counted: %+v", e)
		}
		if e.Certificate == healthy {
			t.Errorf("healthy certificate has an event: %+v", e)
		}
	}
	if !strings.Contains(string(raw), "evil.example") {
		t.Errorf("the forged request left no line in the log: the hostile check checked nothing")
	}

	// The healthy certificate gets its staple once nginx has fetched it.
	var healthyTimes, downTimes []time.Duration
	for deadline := time.Now().Add(10 * time.Second); ; {
		d, staple := handshake(t, addr, "healthy.test")
		if len(staple) > 0 {
			if _, err := ocsp.ParseResponse(staple, ca.cert); err != nil {
				t.Errorf("healthy staple: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthy.test never got a staple (last handshake %v)", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 20; i++ {
		d, _ := handshake(t, addr, "healthy.test")
		healthyTimes = append(healthyTimes, d)
		for _, n := range []string{"refused.test", "dns.test", "nores.test", "blackhole.test"} {
			d, staple := handshake(t, addr, n)
			if len(staple) > 0 {
				t.Errorf("%s got a staple with its responder down", n)
			}
			downTimes = append(downTimes, d)
		}
	}
	hMax, dMax := maxDur(healthyTimes), maxDur(downTimes)
	t.Logf("handshakes: responder up: median %v max %v (%d); responder down: median %v max %v (%d)",
		median(healthyTimes), hMax, len(healthyTimes), median(downTimes), dMax, len(downTimes))
	if dMax > time.Second {
		t.Errorf("a handshake with the responder down took %v: nginx should not wait for the responder", dMax)
	}
}

// blackhole accepts connections and never answers; Cleanup closes them all.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
