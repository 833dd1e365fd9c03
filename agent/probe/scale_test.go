package probe_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/nettest"
	"github.com/stapling-agent/stapling-agent/agent/probe"
)

// countingServer is a TLS server on 127.0.0.1 that records, for every connection it
// accepts, when it was accepted and when it ended (the client closed it, or the handshake
// failed and the server closed it). delay holds every handshake after the ClientHello, so
// each connection stays open at least that long.
type countingServer struct {
	addr  string
	leaf  *x509.Certificate // the certificate it serves
	delay time.Duration
	mu    sync.Mutex
	spans [][2]time.Time
	sni   []string
}

func startCountingServer(t *testing.T, delay time.Duration) *countingServer {
	t.Helper()
	cert, _ := serverCert(t, "site.test")
	s := &countingServer{delay: delay}
	var err error
	if s.leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		s.sni = append(s.sni, h.ServerName)
		s.mu.Unlock()
		time.Sleep(s.delay)
		return nil, nil
	}}
	s.addr = nettest.Serve(t, func(raw net.Conn) {
		start := time.Now()
		c := tls.Server(raw, cfg)
		if c.Handshake() == nil {
			_, _ = io.Copy(io.Discard, c) // open until the client closes it
		}
		c.Close()
		s.mu.Lock()
		s.spans = append(s.spans, [2]time.Time{start, time.Now()})
		s.mu.Unlock()
	})
	return s
}

// conns is how many connections the server has seen end, once that number has held still
// for a moment: the server learns of a client's last close a little after the probe returns.
func (s *countingServer) conns() int {
	return settled(func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.spans)
	})
}

// settled polls count until it gives the same number for 200 ms (at most 5 s).
func settled(count func() int) int {
	n, since := count(), time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := count(); m != n {
			n, since = m, time.Now()
		} else if time.Since(since) >= 200*time.Millisecond {
			break
		}
	}
	return n
}

// maxOpen is the most connections open at one moment, each counted from its accept to
// slack before it ended: the server learns of a client's close a little late, so a client
// that closes one connection and then opens the next would otherwise look like two at once.
func (s *countingServer) maxOpen(slack time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	type ev struct {
		at   time.Time
		open int
	}
	var evs []ev
	for _, sp := range s.spans {
		end := sp[1].Add(-slack)
		if !end.After(sp[0]) {
			continue
		}
		evs = append(evs, ev{sp[0], 1}, ev{end, -1})
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].at.Equal(evs[j].at) {
			return evs[i].open < evs[j].open
		}
		return evs[i].at.Before(evs[j].at)
	})
	n, most := 0, 0
	for _, e := range evs {
		n += e.open
		most = max(most, n)
	}
	return most
}

func configured(t *testing.T, name string) *probe.CertFile {
	t.Helper()
	cert, _ := serverCert(t, name)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return &probe.CertFile{Leaf: leaf}
}

// Vhosts with the same address, SNI name and configured certificate get one set of
// handshakes, and each is reported with its own vhost, naming the others; one with another
// configured certificate is probed on its own.
func TestProbeSameHandshakesOnce(t *testing.T) {
	s := startCountingServer(t, 0)
	cf := &probe.CertFile{Leaf: s.leaf}
	one := probe.RunWith(context.Background(), []probe.Target{{Address: s.addr, ServerName: "site.test", VHost: "httpd.conf:1", Configured: cf}},
		probe.Options{Timeout: 5 * time.Second, Concurrency: 4})
	perTarget := s.conns()
	if one.Targets[0].Status != probe.StatusProbed || perTarget == 0 {
		t.Fatalf("one target: %d connections, %+v", perTarget, one.Targets[0])
	}

	targets := []probe.Target{
		{Address: s.addr, ServerName: "site.test", VHost: "httpd.conf:10", Configured: cf},
		{Address: s.addr, ServerName: "site.test", VHost: "httpd.conf:20", Configured: cf},
		{Address: s.addr, ServerName: "site.test", VHost: "userdata/site.conf:3", Configured: cf},
	}
	rep := probe.RunWith(context.Background(), targets, probe.Options{Timeout: 5 * time.Second, Concurrency: 4})
	if got := s.conns() - perTarget; got != perTarget {
		t.Fatalf("3 vhosts with the same address, name and certificate: %d connections, want %d (one target's)", got, perTarget)
	}
	if len(rep.Targets) != 3 {
		t.Fatalf("%d results for 3 vhosts", len(rep.Targets))
	}
	for i, tg := range rep.Targets {
		var others []string
		for j, o := range targets {
			if j != i {
				others = append(others, o.VHost)
			}
		}
		if tg.VHost != targets[i].VHost || tg.Status != probe.StatusProbed || strings.Join(tg.SharedWith, " ") != strings.Join(others, " ") ||
			tg.Protocols["TLS1.3"] != "accepted" || tg.Certificate.MatchesConfigured == nil || !*tg.Certificate.MatchesConfigured {
			t.Errorf("vhost %d: %+v", i, tg)
		}
	}

	before := s.conns()
	rep = probe.RunWith(context.Background(), []probe.Target{
		{Address: s.addr, ServerName: "site.test", VHost: "a:1", Configured: cf},
		{Address: s.addr, ServerName: "site.test", VHost: "b:1", Configured: configured(t, "site.test")},
	}, probe.Options{Timeout: 5 * time.Second, Concurrency: 4})
	if got := s.conns() - before; got != 2*perTarget || len(rep.Targets[0].SharedWith)+len(rep.Targets[1].SharedWith) != 0 {
		t.Fatalf("another configured certificate: %d connections, want %d; %+v", got, 2*perTarget, rep.Targets)
	}
}

// closedPort is a local port where nothing listens: a connect is refused at once.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// acceptServer accepts every connection and counts it; hold keeps it open without a word
// (a server that stalls) until the test ends, else it is closed at once (a server that drops
// clients).
func acceptServer(t *testing.T, hold bool) (string, func() int) {
	t.Helper()
	var n atomic.Int64
	done := make(chan struct{})
	addr := nettest.Serve(t, func(net.Conn) {
		n.Add(1)
		if hold {
			<-done
		}
	})
	// Registered after Serve's, so it runs first: the held handlers return before Serve waits.
	t.Cleanup(func() { close(done) })
	return addr, func() int { return settled(func() int { return int(n.Load()) }) }
}

// A target whose first connection fails is tried once and reported once with the reason:
// refused and black-holed ports unreachable, a server that closes at once closed, one that
// never answers stalled; nothing else is tried (the servers count one connection a target).
func TestProbeFirstFailureTriedOnce(t *testing.T) {
	dropAddr, dropped := acceptServer(t, false)
	holdAddr, held := acceptServer(t, true)
	cases := []struct {
		name    string
		addr    string
		count   func() int
		status  probe.Status
		errWant string
	}{
		{"refused", closedPort(t), nil, probe.StatusUnreachable, "connection refused"},
		{"black hole", nettest.BlackHole(t), nil, probe.StatusUnreachable, "timeout"},
		{"closes at once", dropAddr, dropped, probe.StatusClosed, ""},
		{"never answers", holdAddr, held, probe.StatusStalled, "stalled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var targets []probe.Target
			for i := 0; i < 5; i++ {
				targets = append(targets, probe.Target{Address: c.addr, ServerName: fmt.Sprintf("site%d.test", i)})
			}
			rep := probe.RunWith(context.Background(), targets, probe.Options{Timeout: 500 * time.Millisecond, Concurrency: 5})
			if len(rep.Targets) != len(targets) {
				t.Fatalf("%d results for %d targets", len(rep.Targets), len(targets))
			}
			for _, tg := range rep.Targets {
				if tg.Status != c.status || !strings.Contains(tg.Error, c.errWant) {
					t.Errorf("%s: status %s, error %q; want %s with %q", tg.ServerName, tg.Status, tg.Error, c.status, c.errWant)
				}
				if c.status != probe.StatusStalled && len(tg.Protocols) != 0 {
					t.Errorf("%s: protocols %v reported for a target never reached", tg.ServerName, tg.Protocols)
				}
			}
			if c.count != nil {
				if n := c.count(); n != len(targets) {
					t.Fatalf("%d connections for %d targets, want one each", n, len(targets))
				}
			}
			if rep.Healthy() {
				t.Fatal("healthy with every target failing")
			}
		})
	}
}

// --concurrency N holds at most N connections at once, counted by the server, while a
// target's handshakes follow one another on one connection at a time.
func TestProbeConcurrencyBound(t *testing.T) {
	const delay = 300 * time.Millisecond
	s := startCountingServer(t, delay)
	var targets []probe.Target
	for i := 0; i < 12; i++ {
		targets = append(targets, probe.Target{Address: s.addr, ServerName: fmt.Sprintf("site%d.test", i)})
	}
	const n = 3
	rep := probe.RunWith(context.Background(), targets, probe.Options{Timeout: 10 * time.Second, Concurrency: n})
	for _, tg := range rep.Targets {
		if tg.Status != probe.StatusProbed {
			t.Fatalf("%s: %+v", tg.ServerName, tg)
		}
	}
	// Every connection lasts at least delay; half of it is the slack for the server to see a close.
	if most := s.maxOpen(delay / 2); most > n || most < 2 {
		t.Fatalf("%d connections open at once with --concurrency %d", most, n)
	}
	if s.conns() < len(targets)*2 {
		t.Fatalf("only %d connections for %d targets", s.conns(), len(targets))
	}
}

// At the deadline the handshakes under way stop and every target not finished is reported
// not_probed with the reason, none left out, and the run returns.
func TestProbeDeadlineMarksTheRest(t *testing.T) {
	var targets []probe.Target
	for i := 0; i < 20; i++ {
		targets = append(targets, probe.Target{Address: nettest.BlackHole(t), ServerName: "site.test"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	rep := probe.RunWith(ctx, targets, probe.Options{Timeout: 500 * time.Millisecond, Concurrency: 4})
	took := time.Since(start)
	// A correctness bound (it stops), not a performance one: 20 timeouts of 0.5 s four at a
	// time would take 2.5 s.
	if took > 5*time.Second {
		t.Fatalf("the probe ran %s past a 0.7 s deadline", took)
	}
	count := map[probe.Status]int{}
	for i, tg := range rep.Targets {
		if tg.Address != targets[i].Address {
			t.Fatalf("result %d is %s, want %s", i, tg.Address, targets[i].Address)
		}
		count[tg.Status]++
		if tg.Status == probe.StatusNotProbed && !strings.Contains(tg.Error, "deadline") {
			t.Errorf("not probed without saying why: %+v", tg)
		}
	}
	if len(rep.Targets) != len(targets) || count[probe.StatusUnreachable]+count[probe.StatusNotProbed] != len(targets) || count[probe.StatusNotProbed] == 0 {
		t.Fatalf("statuses %v for %d targets", count, len(targets))
	}
}

// The text report says once why a target was not reached or not probed, and which vhosts
// one probe answered for.
func TestRenderTextStatuses(t *testing.T) {
	rep := &probe.Report{Targets: []probe.TargetResult{
		{Address: "127.0.0.1:1", ServerName: "a.test", Status: probe.StatusUnreachable, Error: "unreachable: dial tcp: i/o timeout", HandshakeMS: 500, SharedWith: []string{"httpd.conf:9"}},
		{Address: "127.0.0.1:2", ServerName: "b.test", Status: probe.StatusNotProbed, Error: "not probed: the probe's deadline came first"},
	}, Responders: []probe.ResponderResult{{URL: "http://ocsp.test/", NotProbed: true, Error: "not probed: the probe's deadline came first"}}}
	var b strings.Builder
	probe.RenderText(&b, rep)
	out := b.String()
	for _, want := range []string{
		"also for    httpd.conf:9 (same address, name and certificate: one probe)",
		"UNREACHABLE after 500 ms: unreachable: dial tcp: i/o timeout (nothing else tried)",
		"NOT PROBED  not probed: the probe's deadline came first",
		"responder http://ocsp.test/: NOT PROBED: not probed: the probe's deadline came first",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "protocols") {
		t.Errorf("protocols listed for targets never reached:\n%s", out)
	}
}

// The protocols of a server that speaks only TLS 1.1 and 1.2: the default offer negotiates
// 1.2; the TLS 1.0-1.1 offer is answered with 1.1 (found as soon as the server says so, the
// handshake then abandoned), so 1.0 is asked alone and refused; 1.3 alone is refused.
func TestProbeVersionWindow(t *testing.T) {
	cert, _ := serverCert(t, "old.test")
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS12}
	addr := nettest.Serve(t, func(raw net.Conn) {
		c := tls.Server(raw, cfg)
		if c.Handshake() == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	})
	rep := probe.RunWith(context.Background(), []probe.Target{{Address: addr, ServerName: "old.test"}}, probe.Options{Timeout: 5 * time.Second})
	got := rep.Targets[0]
	want := map[string]string{"TLS1.0": "alert", "TLS1.1": "accepted", "TLS1.2": "accepted", "TLS1.3": "alert"}
	if got.Status != probe.StatusProbed || !maps.Equal(got.Protocols, want) || got.Negotiated.Version != "TLS 1.2" {
		t.Fatalf("status %s, protocols %v (want %v), negotiated %q, error %q", got.Status, got.Protocols, want, got.Negotiated.Version, got.Error)
	}
}

// A server whose answer the client cannot take (a certificate it cannot parse) still speaks
// TLS: handshake_failed, its protocols tried; a port that answers plain HTTP is closed, with
// nothing else tried.
func TestProbeNoTLSAndBadCertificate(t *testing.T) {
	good, _ := serverCert(t, "bad.test")
	bad := tls.Certificate{Certificate: [][]byte{[]byte("not a certificate")}, PrivateKey: good.PrivateKey}
	tlsAddr := nettest.Serve(t, func(c net.Conn) { _ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{bad}}).Handshake() })
	httpAddr := nettest.Serve(t, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 4096))
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
	})
	rep := probe.RunWith(context.Background(), []probe.Target{{Address: tlsAddr, ServerName: "bad.test"}, {Address: httpAddr, ServerName: "http.test"}}, probe.Options{Timeout: 5 * time.Second})
	if got := rep.Targets[0]; got.Status != probe.StatusHandshakeFailed || len(got.Protocols) != 4 || !strings.Contains(got.Error, "certificate") {
		t.Errorf("unparseable certificate: status %s, protocols %v, error %q", got.Status, got.Protocols, got.Error)
	}
	if got := rep.Targets[1]; got.Status != probe.StatusClosed || len(got.Protocols) != 0 {
		t.Errorf("plain HTTP: status %s, protocols %v, error %q", got.Status, got.Protocols, got.Error)
	}
}
