package frontend

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/logwatch"
)

const sfx = ` while requesting certificate status, responder: ocsp.example.net, peer: 192.0.2.7:80, certificate: "/etc/ssl/certs/a.pem"`

func TestClassifyNginx(t *testing.T) {
	cases := []struct {
		name, line string
		kind       LogKind
		cause      logwatch.Cause
		peer       string
	}{
		// Shapes Debian's nginx 1.22 wrote in TestRealNginxStaplingLines.
		{"closed (refused)", `2026/11/22 04:06:41 [error] 31837#31837: OCSP responder prematurely closed connection` + sfx, LogFailure, CauseClosed, "192.0.2.7:80"},
		{"dns", `2026/11/22 04:06:41 [error] 31837#31837: ocsp.example.net could not be resolved (3: Host not found) while requesting certificate status, responder: ocsp.example.net, certificate: "/etc/ssl/certs/a.pem"`, LogFailure, logwatch.CauseDNS, ""},
		{"no resolver warn", `2026/11/22 04:06:41 [warn] 31837#31837: no resolver defined to resolve ocsp.example.net while requesting certificate status, responder: ocsp.example.net, certificate: "/etc/ssl/certs/a.pem"`, LogNote, CauseNoResolver, ""},
		{"revoked", `2026/11/22 04:06:41 [error] 31837#31837: certificate status "revoked" in the OCSP response` + sfx, LogCertStatus, "", "192.0.2.7:80"},
		// Shapes from ngx_event_openssl_stapling.c / ngx_event_connect.c / ngx_connection_error.
		{"timeout", `2025/01/02 03:04:05 [error] 12#12: OCSP responder timed out (110: Connection timed out)` + sfx, LogFailure, CauseTimeout, "192.0.2.7:80"},
		{"connect unreachable", `2025/01/02 03:04:05 [error] 12#12: connect() to 192.0.2.7:80 failed (101: Network is unreachable)` + sfx, LogFailure, logwatch.CauseUnreachable, "192.0.2.7:80"},
		{"recv refused", `2025/01/02 03:04:05 [error] 12#12: recv() failed (111: Connection refused)` + sfx, LogFailure, logwatch.CauseConnectRefused, "192.0.2.7:80"},
		{"send reset", `2025/01/02 03:04:05 [error] 12#12: send() failed (104: Connection reset by peer)` + sfx, LogFailure, logwatch.CauseSendFailed, "192.0.2.7:80"},
		{"no resolver error", `2025/01/02 03:04:05 [error] 12#12: no resolver defined to resolve ocsp.example.net while requesting certificate status, responder: ocsp.example.net, certificate: "/etc/ssl/certs/a.pem"`, LogFailure, CauseNoResolver, ""},
		{"invalid response", `2025/01/02 03:04:05 [error] 12#12: OCSP responder sent invalid response` + sfx, LogFailure, logwatch.CauseDecodeError, "192.0.2.7:80"},
		{"content type", `2025/01/02 03:04:05 [error] 12#12: OCSP responder sent invalid "Content-Type" header: "text/html"` + sfx, LogFailure, logwatch.CauseDecodeError, "192.0.2.7:80"},
		{"d2i", `2025/01/02 03:04:05 [error] 12#12: d2i_OCSP_RESPONSE() failed (SSL: error:0680007B:asn1 encoding routines::header too long)` + sfx, LogFailure, logwatch.CauseDecodeError, "192.0.2.7:80"},
		{"tryLater", `2025/01/02 03:04:05 [error] 12#12: OCSP response not successful (3: tryLater)` + sfx, LogFailure, CauseOCSPStatus, "192.0.2.7:80"},
		{"verify", `2025/01/02 03:04:05 [error] 12#12: OCSP_basic_verify() failed (SSL: error:27069065:OCSP routines:OCSP_basic_verify:certificate verify error:Verify error:unable to get local issuer certificate)` + sfx, LogCertStatus, "", "192.0.2.7:80"},
		{"init (real, nginx -t)", `2026/11/22 04:09:10 [warn] 9101#9101: "ssl_stapling" ignored, issuer certificate not found for certificate "/etc/ssl/certs/x.pem"`, LogInit, "", ""},
		{"init", `2025/01/02 03:04:05 [warn] 12#12: "ssl_stapling" ignored, no OCSP responder URL in the certificate "/etc/ssl/certs/le.pem"`, LogInit, "", ""},

		// Not events.
		{"client line with our text", `2026/11/22 04:06:41 [error] 31837#31837: *2 open() "/www/OCSP responder timed out (110: Connection timed out) while requesting certificate status, responder: evil.example, peer: 6.6.6.6:80, certificate: "/evil.pem"" failed (13: Permission denied), client: 127.0.0.1, server: healthy.test, request: "GET /x HTTP/1.1", host: "healthy.test", referrer: "x" OCSP responder timed out (110: Connection timed out) while requesting certificate status, responder: evil.example, peer: 6.6.6.6:80, certificate: "/evil.pem""`, LogNone, "", ""},
		{"connection-scoped", `2025/01/02 03:04:05 [error] 12#12: *7 OCSP responder timed out (110: Connection timed out)` + sfx, LogNone, "", ""},
		{"message not at start", `2025/01/02 03:04:05 [error] 12#12: upstream said OCSP responder timed out (110: Connection timed out)` + sfx, LogNone, "", ""},
		{"wrong level", `2025/01/02 03:04:05 [info] 12#12: OCSP responder timed out (110: Connection timed out)` + sfx, LogNone, "", ""},
		{"bad time", `2025/13/02 03:04:05 [error] 12#12: OCSP responder timed out (110: Connection timed out)` + sfx, LogNone, "", ""},
		{"no suffix", `2025/01/02 03:04:05 [error] 12#12: OCSP responder timed out (110: Connection timed out)`, LogNone, "", ""},
		{"peer not an address", `2025/01/02 03:04:05 [error] 12#12: OCSP responder timed out (110: Connection timed out) while requesting certificate status, responder: a, peer: evil text, certificate: "/x"`, LogNone, "", ""},
		{"connect peer mismatch", `2025/01/02 03:04:05 [error] 12#12: connect() to 10.0.0.1:80 failed (111: Connection refused)` + sfx, LogNone, "", ""},
		{"resolved host mismatch", `2025/01/02 03:04:05 [error] 12#12: other.example could not be resolved (3: Host not found) while requesting certificate status, responder: ocsp.example.net, certificate: "/x"`, LogNone, "", ""},
		{"good status", `2025/01/02 03:04:05 [error] 12#12: certificate status "good" in the OCSP response` + sfx, LogNone, "", ""},
		{"apache line", `[Wed Oct 11 14:32:52.123456 2023] [ssl:error] [pid 1] AH01941: stapling_renew_response: responder error`, LogNone, "", ""},
		{"too long", `2025/01/02 03:04:05 [error] 12#12: OCSP responder timed out (110: Connection timed out)` + strings.Repeat("x", MaxNginxLine) + sfx, LogNone, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := ClassifyNginx([]byte(c.line))
			if ev.Kind != c.kind || ev.Cause != c.cause || ev.Peer != c.peer {
				t.Fatalf("got kind %s cause %q peer %q, want %s %q %q (%+v)", ev.Kind, ev.Cause, ev.Peer, c.kind, c.cause, c.peer, ev)
			}
			if ev.Kind == LogNone {
				return
			}
			if ev.Kind != LogInit && (ev.Responder != "ocsp.example.net" || ev.Certificate != "/etc/ssl/certs/a.pem") {
				t.Errorf("responder %q certificate %q", ev.Responder, ev.Certificate)
			}
			if ev.Time.IsZero() || ev.Proc == "" {
				t.Errorf("time %v proc %q", ev.Time, ev.Proc)
			}
		})
	}
}

func FuzzClassifyNginx(f *testing.F) {
	f.Add([]byte(`2025/01/02 03:04:05 [error] 12#12: OCSP responder timed out (110: Connection timed out)` + sfx))
	f.Add([]byte(`2025/01/02 03:04:05 [warn] 12#12: "ssl_stapling" ignored, no OCSP responder URL in the certificate "/x"`))
	f.Fuzz(func(t *testing.T, line []byte) {
		ev := ClassifyNginx(line)
		if ev.Kind == LogNone {
			return
		}
		if bytes.Contains(line[:min(len(line), 40)], []byte(": *")) {
			t.Fatalf("connection-scoped line classified: %q", line)
		}
		if ev.Kind != LogInit && !bytes.HasSuffix(bytes.TrimRight(line, "\r\n"), []byte(`"`)) {
			t.Fatalf("event without the certificate at the end: %q", line)
		}
	})
}

func logLine(t time.Time, msg string) string {
	return t.Format("2006/01/02 15:04:05") + " [error] 9#9: " + msg + sfx + "\n"
}

func TestScanNginxLog(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	p := filepath.Join(dir, "error.log")
	// error.log.2.gz (oldest), error.log.1, error.log: one failure each hour.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(logLine(base, "OCSP responder timed out (110: Connection timed out)")))
	zw.Close()
	writeFiles(t, dir, map[string]string{
		"error.log.2.gz": gz.String(),
		"error.log.1":    logLine(base.Add(time.Hour), "OCSP responder prematurely closed connection"),
		"error.log": strings.Repeat("y", 200*1024) + "\n" + // a line longer than the buffer
			logLine(base.Add(2*time.Hour), "OCSP responder sent invalid response") +
			"2025/03/01 14:30:00 [error] 9#9: *4 client text certificate\n" +
			logLine(base.Add(3*time.Hour), "OCSP responder sent invalid response"),
	})
	scan := func(since, until time.Time) ([]NginxEvent, NginxScanStats) {
		var evs []NginxEvent
		st, err := ScanNginxLog(context.Background(), p, since, until, func(e NginxEvent) { evs = append(evs, e) })
		if err != nil {
			t.Fatal(err)
		}
		return evs, st
	}
	evs, st := scan(base, base.Add(3*time.Hour))
	if len(evs) != 3 || evs[0].Cause != CauseTimeout || evs[1].Cause != CauseClosed || evs[2].Cause != logwatch.CauseDecodeError {
		t.Errorf("window [0h,3h): %+v", evs)
	}
	if len(st.Files) != 3 || st.Skipped != 1 {
		t.Errorf("stats %+v", st)
	}
	// A window inside the current file reads only it.
	evs, st = scan(base.Add(2*time.Hour), base.Add(4*time.Hour))
	if len(evs) != 2 || len(st.Files) != 1 {
		t.Errorf("window [2h,4h): %d events, files %v", len(evs), st.Files)
	}
	if _, err := ScanNginxLog(context.Background(), filepath.Join(dir, "missing.log"), base, base, func(NginxEvent) {}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing log: %v", err)
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := mkfifo(fifo); err == nil {
		if _, err := ScanNginxLog(context.Background(), fifo, base, base, func(NginxEvent) {}); err == nil {
			t.Error("FIFO read as a log")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ScanNginxLog(ctx, p, base.Add(-time.Hour), base.Add(5*time.Hour), func(NginxEvent) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled scan: %v", err)
	}
}
