package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/stapling-agent/stapling-agent/agent/testguard"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

func TestMain(m *testing.M) { os.Exit(testguard.Main(m)) }

// realErr makes the transport error a real failure produces, against listeners on loopback.
func realErr(t *testing.T, kind string) error {
	t.Helper()
	client := &http.Transport{DialContext: (&net.Dialer{Timeout: 300 * time.Millisecond}).DialContext, ResponseHeaderTimeout: 300 * time.Millisecond}
	defer client.CloseIdleConnections()
	get := func(url string) error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := client.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			return errors.New("no error")
		}
		return err
	}
	switch kind {
	case "refused":
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		return get("http://" + addr + "/")
	case "hang": // accepts, never answers
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				time.Sleep(time.Second)
				c.Close()
			}
		}()
		return get("http://" + ln.Addr().String() + "/")
	case "eof": // reads the request, closes without a word (unread data would make it a reset)
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Read(make([]byte, 4096))
				c.Close()
			}
		}()
		return get("http://" + ln.Addr().String() + "/")
	case "dns":
		_, err := net.DefaultResolver.LookupHost(context.Background(), "no-such-host.invalid")
		return err
	}
	t.Fatalf("unknown %s", kind)
	return nil
}

func TestNetCause(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want logwatch.Cause
	}{
		{"refused", realErr(t, "refused"), logwatch.CauseConnectRefused},
		{"read timeout", realErr(t, "hang"), logwatch.CauseReadTimeout},
		{"closed without an answer", realErr(t, "eof"), logwatch.CauseEmptyResponse},
		{"dns", realErr(t, "dns"), logwatch.CauseDNS},
		{"connect timeout", &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, logwatch.CauseConnectTimeout},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, logwatch.CauseUnreachable},
		{"network unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, logwatch.CauseUnreachable},
		{"other", errors.New("something else"), logwatch.CauseUnspecified},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := netCause(c.err); got != c.want {
				t.Fatalf("netCause(%v) = %s, want %s", c.err, got, c.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestHandshakeOutcome(t *testing.T) {
	cases := []struct {
		err          error
		want, detail string
	}{
		{nil, "accepted", ""},
		{tls.AlertError(70), "alert", "tls: protocol version not supported"},
		{errors.New("remote error: tls: handshake failure"), "alert", "handshake failure"},
		{io.EOF, "reset", ""},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "reset", ""},
		{context.DeadlineExceeded, "timeout", ""},
		{&net.OpError{Op: "read", Err: timeoutErr{}}, "timeout", ""},
		{errors.New("x509: something\nodd"), "error", "x509: something odd"},
	}
	for _, c := range cases {
		got, detail := handshakeOutcome(c.err)
		if got != c.want || detail != c.detail {
			t.Errorf("handshakeOutcome(%v) = %q %q, want %q %q", c.err, got, detail, c.want, c.detail)
		}
	}
}

func TestOCSPOutcome(t *testing.T) {
	cases := []struct {
		resp         *ocsp.Response
		err          error
		status, cert string
	}{
		{&ocsp.Response{Status: ocsp.Good}, nil, "successful", "good"},
		{&ocsp.Response{Status: ocsp.Revoked}, nil, "successful", "revoked"},
		{&ocsp.Response{Status: ocsp.Unknown}, nil, "successful", "unknown"},
		{nil, ocsp.ResponseError{Status: ocsp.TryLater}, "try later", ""},
		{nil, ocsp.ResponseError{Status: ocsp.Unauthorized}, "unauthorized", ""},
		{nil, errors.New("asn1: syntax error"), "unparseable", ""},
	}
	for _, c := range cases {
		status, cert := ocspOutcome(c.resp, c.err)
		if status != c.status || cert != c.cert {
			t.Errorf("ocspOutcome(%v, %v) = %q %q, want %q %q", c.resp, c.err, status, cert, c.status, c.cert)
		}
	}
}

// The text report names every protocol's outcome, the staple, the certificate and each
// responder, and escapes what a server or a certificate could have put there.
func TestRenderText(t *testing.T) {
	match := false
	tr := TargetResult{Address: "127.0.0.1:443", ServerName: "shop.example\x1b[31m", Protocols: map[string]string{
		"TLS1.0": "alert", "TLS1.1": "alert", "TLS1.2": "accepted", "TLS1.3": "accepted"}, Alerts: map[string]string{"TLS1.0": "protocol version"}, HandshakeMS: 12}
	tr.Negotiated.Version, tr.Negotiated.Cipher = "TLS 1.3", "TLS_AES_128_GCM_SHA256"
	tr.Staple.Present, tr.Staple.Status, tr.Staple.CertStatus = true, "successful", "good"
	tr.Certificate.Subject, tr.Certificate.MatchesConfigured, tr.Certificate.Chain = "CN=shop.example", &match, "ok"
	failed := TargetResult{Address: "127.0.0.1:8443", Protocols: map[string]string{}, Error: "dial tcp: connection refused\nagain", HandshakeMS: 1}
	rep := &Report{Targets: []TargetResult{tr, failed}, Responders: []ResponderResult{
		{URL: "http://ocsp.example/", OK: true, LatencyMS: 40, CertStatus: "good"},
		{URL: "http://dead.example/\x1b]0;title\a", Cause: "connect_refused", Error: "refused", LatencyMS: 1},
	}}
	var b bytes.Buffer
	RenderText(&b, rep)
	out := b.String()
	for _, want := range []string{
		`127.0.0.1:443 (shop.example\x1b[31m)`,
		"protocols   TLS1.0 alert (protocol version), TLS1.1 alert, TLS1.2 accepted, TLS1.3 accepted",
		"handshake   TLS 1.3 TLS_AES_128_GCM_SHA256 in 12 ms",
		"staple      successful, certificate good",
		"matches configured: NO: interception or wrong vhost",
		"127.0.0.1:8443 (no SNI)",
		"handshake   FAILED after 1 ms: dial tcp: connection refused again",
		"responder http://ocsp.example/: ok in 40 ms, certificate good",
		`responder http://dead.example/\x1b]0;title\x07: FAILED (connect_refused) after 1 ms: refused`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, '\a') {
		t.Fatalf("raw control characters in the output:\n%q", out)
	}
	if rep.Healthy() || rep.Empty() || !(&Report{}).Empty() || !(&Report{Targets: []TargetResult{tr}}).Healthy() {
		t.Fatal("Healthy/Empty")
	}
}
