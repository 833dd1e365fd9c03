package frontend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"time"

	"github.com/stapling-agent/stapling-agent/logwatch"
)

// NginxErrorLog is ea-nginx's error log (its --error-log-path); Engintron's NGINX uses the same.
const NginxErrorLog = "/var/log/nginx/error.log"

// LogKind is what an NGINX error-log line means for stapling.
type LogKind uint8

const (
	LogNone LogKind = iota
	// LogFailure: one attempt to fetch a staple failed (one line per responder address
	// tried, ngx_ssl_ocsp_next). nginx logs no separate "renewal failed" line: after the
	// last address it keeps serving what it has and retries in 300 s.
	LogFailure
	// LogCertStatus: a response arrived but says revoked/unknown, or failed the checks.
	LogCertStatus
	// LogInit: at start or reload, stapling was switched off for a certificate.
	LogInit
	// LogNote: worth showing, not a failure ("no resolver defined" at warn: nginx falls
	// back to the addresses it resolved at start-up, which go stale with the CA's DNS).
	LogNote
)

func (k LogKind) String() string {
	return [...]string{"none", "failure", "certificate_status", "init", "note"}[k]
}

// MarshalText makes the kind a string in JSON.
func (k LogKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Causes only NGINX's lines need; the others are logwatch's.
const (
	// CauseTimeout: "OCSP responder timed out". nginx writes the same text whether the
	// connect or the read timed out (ngx_ssl_ocsp_write_handler and read_handler), so it
	// cannot be split into connect_timeout and read_timeout.
	CauseTimeout logwatch.Cause = "timeout"
	// CauseNoResolver: no resolver directive and no address from start-up.
	CauseNoResolver logwatch.Cause = "no_resolver"
	// CauseClosed: "OCSP responder prematurely closed connection". nginx connects without
	// blocking, so a refused connection shows up later as an end of file on read and is
	// logged with this text, the same as a responder closing before a whole answer
	// (checked with Debian's nginx 1.22: a closed port gives this line, never
	// "connect() ... (111: Connection refused)"). A firewall that REJECTs looks like this.
	CauseClosed logwatch.Cause = "connection_closed"
	// CauseOCSPStatus: the responder answered with an OCSP error status (tryLater,
	// internalError, ...): "OCSP response not successful (3: tryLater)".
	CauseOCSPStatus logwatch.Cause = "ocsp_status"
)

// MaxNginxLine is the longest line we classify: nginx builds each line in a buffer of
// NGX_MAX_ERROR_STR (2048) bytes and cuts what does not fit, so 4 KiB has room to spare.
const MaxNginxLine = 4096

// NginxEvent is a classified NGINX error-log line. Zero Kind: not a stapling line.
type NginxEvent struct {
	Kind        LogKind        `json:"kind"`
	Time        time.Time      `json:"time"`
	Level       string         `json:"level"`
	Proc        string         `json:"proc"` // "PID#TID"
	Cause       logwatch.Cause `json:"cause,omitempty"`
	Errno       string         `json:"errno,omitempty"`  // "111"; the resolver's code for DNS
	Status      string         `json:"status,omitempty"` // "revoked", "3: tryLater"
	Responder   string         `json:"responder,omitempty"`
	Peer        string         `json:"peer,omitempty"` // address:port tried, when one was
	Certificate string         `json:"certificate,omitempty"`
	Message     string         `json:"message"` // the message before nginx's context suffix
}

var (
	suffixMark = []byte(" while requesting certificate status, responder: ")
	peerMark   = []byte(", peer: ")
	certMark   = []byte(", certificate: \"")
	initMark   = []byte("\"ssl_stapling\" ignored, ")
)

// ClassifyNginx parses one line of NGINX's error log (without its newline) from its first
// byte, in the shape ngx_log_error_core writes:
//
//	YYYY/MM/DD HH:MM:SS [level] PID#TID: message( (errno: text)) while requesting certificate status, responder: HOST(, peer: ADDR), certificate: "PATH"
//
// The stapling fetch logs through the cycle's log (ngx_ssl_stapling_update), which has no
// connection, so its lines never carry the "*CID " that every connection-scoped line
// has; request lines, Host, Referer, upstream and FastCGI text appear only on those. A
// line with "*" where the message starts is therefore never an event, and the message must
// be one of the texts of src/event/ngx_event_openssl_stapling.c (or the connect/send/recv
// errors the fetch's connection logs), in message position, at its level, followed by the
// context suffix, which ends the line.
//
// Not defended: FastCGI stderr ("FastCGI sent in stderr: ...") is written with its newlines
// raw, so a tenant's PHP behind nginx's fastcgi_pass can start a line with any text; as
// with Apache (FACTS.md section 10) no line is proof on its own.
func ClassifyNginx(line []byte) NginxEvent {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte{'\n'}), []byte{'\r'})
	if len(line) > MaxNginxLine || len(line) < 30 {
		return NginxEvent{}
	}
	t, ok := parseNginxTime(line[:19])
	if !ok || line[19] != ' ' || line[20] != '[' {
		return NginxEvent{}
	}
	rest := line[21:]
	end := bytes.IndexByte(rest, ']')
	if end < 1 || end > 6 {
		return NginxEvent{}
	}
	level := string(rest[:end])
	switch level {
	case "emerg", "alert", "crit", "error", "warn", "notice", "info":
	default:
		return NginxEvent{}
	}
	rest = rest[end+1:]
	if len(rest) == 0 || rest[0] != ' ' {
		return NginxEvent{}
	}
	rest = rest[1:]
	colon := bytes.Index(rest, []byte(": "))
	if colon < 3 {
		return NginxEvent{}
	}
	pid, tid, found := bytes.Cut(rest[:colon], []byte{'#'})
	if !found || !digits(pid) || !digits(tid) {
		return NginxEvent{}
	}
	proc := string(rest[:colon])
	msg := rest[colon+2:]
	if len(msg) == 0 || msg[0] == '*' {
		return NginxEvent{}
	}
	ev := NginxEvent{Time: t, Level: level, Proc: proc}
	if bytes.HasPrefix(msg, initMark) {
		return classifyInit(ev, msg)
	}
	i := bytes.LastIndex(msg, suffixMark)
	if i < 0 {
		return NginxEvent{}
	}
	head, tail := msg[:i], msg[i+len(suffixMark):]
	if !parseSuffix(&ev, tail) {
		return NginxEvent{}
	}
	ev.Message = string(head)
	if !classifyMessage(&ev, head) {
		return NginxEvent{}
	}
	return ev
}

// parseSuffix reads what ngx_ssl_ocsp_log_error appends: responder, peer when a connection
// was tried, and the certificate file (stapling always names it; OCSP checks of client
// certificates do not, and run on a client's connection).
func parseSuffix(ev *NginxEvent, tail []byte) bool {
	c := bytes.LastIndex(tail, certMark)
	if c < 0 || len(tail) < c+len(certMark)+2 || tail[len(tail)-1] != '"' {
		return false
	}
	ev.Certificate = string(tail[c+len(certMark) : len(tail)-1])
	hp := tail[:c]
	if p := bytes.LastIndex(hp, peerMark); p >= 0 {
		peer := hp[p+len(peerMark):]
		if !isHostPort(peer) {
			return false
		}
		ev.Peer = string(peer)
		hp = hp[:p]
	}
	if !isHost(hp) {
		return false
	}
	ev.Responder = string(hp)
	return true
}

// classifyMessage decides kind and cause from the message in front of the suffix.
func classifyMessage(ev *NginxEvent, m []byte) bool {
	fail := func(c logwatch.Cause, levels ...string) bool {
		if !oneOf(ev.Level, levels) {
			return false
		}
		ev.Kind, ev.Cause = LogFailure, c
		return true
	}
	switch {
	case bytes.HasPrefix(m, []byte("OCSP responder timed out (")):
		// ngx_ssl_ocsp_write_handler/read_handler: NGX_LOG_ERR with NGX_ETIMEDOUT.
		errno, _, ok := errnoOf(m[len("OCSP responder timed out"):])
		if !ok {
			return false
		}
		ev.Errno = errno
		return fail(CauseTimeout, "error")
	case bytes.HasPrefix(m, []byte("connect() to ")):
		// ngx_event_connect_peer: "connect() to %V failed" at ERR for refused/unreachable,
		// CRIT otherwise.
		r := m[len("connect() to "):]
		sp := bytes.Index(r, []byte(" failed ("))
		if sp < 0 || string(r[:sp]) != ev.Peer {
			return false
		}
		errno, _, ok := errnoOf(r[sp+len(" failed"):])
		if !ok {
			return false
		}
		ev.Errno = errno
		return fail(socketCause("connect", errno), "error", "crit")
	case bytes.HasPrefix(m, []byte("send() failed (")), bytes.HasPrefix(m, []byte("recv() failed (")):
		// ngx_connection_error: ERR for the usual network errnos, ALERT otherwise.
		op := string(m[:4])
		errno, _, ok := errnoOf(m[len("send() failed"):])
		if !ok || ev.Peer == "" {
			return false
		}
		ev.Errno = errno
		return fail(socketCause(op, errno), "error", "alert", "info")
	case bytes.HasPrefix(m, []byte("no resolver defined to resolve ")):
		if string(m[len("no resolver defined to resolve "):]) != ev.Responder {
			return false
		}
		switch ev.Level {
		case "error": // no address from start-up either: the fetch fails
			ev.Kind, ev.Cause = LogFailure, CauseNoResolver
		case "warn": // connects to the addresses resolved at start-up
			ev.Kind, ev.Cause = LogNote, CauseNoResolver
		default:
			return false
		}
		return true
	case bytes.HasPrefix(m, append([]byte(ev.Responder), " could not be resolved ("...)):
		// ngx_ssl_ocsp_resolve_handler: "%V could not be resolved (%i: %s)", the
		// resolver's code: 1-5 DNS rcodes (3 = Host not found), 110 timed out.
		errno, _, ok := errnoOf(m[len(ev.Responder)+len(" could not be resolved"):])
		if !ok || ev.Peer != "" {
			return false
		}
		ev.Errno = errno
		return fail(logwatch.CauseDNS, "error")
	case string(m) == "OCSP responder prematurely closed connection":
		return fail(CauseClosed, "error")
	case string(m) == "OCSP responder sent invalid response",
		bytes.HasPrefix(m, []byte("OCSP responder sent invalid \"Content-Type\" header: \"")),
		bytes.HasPrefix(m, []byte("d2i_OCSP_RESPONSE() failed")),
		bytes.HasPrefix(m, []byte("OCSP_response_get1_basic() failed")):
		return fail(logwatch.CauseDecodeError, "error")
	case bytes.HasPrefix(m, []byte("OCSP response not successful (")):
		_, _, ok := errnoOf(m[len("OCSP response not successful"):])
		if !ok {
			return false
		}
		ev.Status = string(m[len("OCSP response not successful (") : len(m)-1])
		return fail(CauseOCSPStatus, "error")
	case bytes.HasPrefix(m, []byte("certificate status \"")) && bytes.HasSuffix(m, []byte("\" in the OCSP response")):
		// ngx_ssl_stapling_ocsp_handler: OCSP_cert_status_str: "good", "revoked", "unknown".
		st := string(m[len("certificate status \"") : len(m)-len("\" in the OCSP response")])
		if st != "revoked" && st != "unknown" {
			return false
		}
		ev.Status = st
	case string(m) == "certificate status not found in the OCSP response",
		string(m) == "invalid nextUpdate time in certificate status",
		bytes.HasPrefix(m, []byte("OCSP_basic_verify() failed")),
		bytes.HasPrefix(m, []byte("OCSP_check_validity() failed")):
	default:
		return false
	}
	if ev.Level != "error" {
		return false
	}
	ev.Kind = LogCertStatus
	return true
}

// classifyInit reads the start-up warnings of ngx_ssl_stapling_issuer/_responder:
// "ssl_stapling" ignored, <why> ... certificate "PATH".
func classifyInit(ev NginxEvent, m []byte) NginxEvent {
	if ev.Level != "warn" || len(m) < 2 || m[len(m)-1] != '"' {
		return NginxEvent{}
	}
	q := bytes.LastIndex(m[:len(m)-1], []byte("certificate \""))
	if q < 0 {
		return NginxEvent{}
	}
	ev.Certificate = string(m[q+len("certificate \"") : len(m)-1])
	ev.Kind = LogInit
	ev.Message = string(m)
	if r := bytes.Index(m, []byte("OCSP responder \"")); r >= 0 {
		if e := bytes.IndexByte(m[r+len("OCSP responder \""):], '"'); e >= 0 {
			ev.Responder = string(m[r+len("OCSP responder \"") : r+len("OCSP responder \"")+e])
		}
	}
	return ev
}

// socketCause maps an errno of the fetch's connection to the shared vocabulary.
func socketCause(op, errno string) logwatch.Cause {
	switch errno {
	case "111":
		return logwatch.CauseConnectRefused
	case "113", "101", "100", "112", "99":
		return logwatch.CauseUnreachable
	case "110":
		if op == "recv" {
			return logwatch.CauseReadTimeout
		}
		return logwatch.CauseConnectTimeout
	}
	if op == "send" {
		return logwatch.CauseSendFailed
	}
	return logwatch.CauseUnspecified
}

// errnoOf reads " (N: text)" (ngx_log_errno; also "(SSL: ...)"-free forms) which must end b.
func errnoOf(b []byte) (errno, text string, ok bool) {
	if !bytes.HasPrefix(b, []byte(" (")) || b[len(b)-1] != ')' {
		return "", "", false
	}
	inner := b[2 : len(b)-1]
	n, txt, found := bytes.Cut(inner, []byte(": "))
	if !found || !digits(n) || len(n) > 6 || bytes.ContainsAny(txt, "()") {
		return "", "", false
	}
	return string(n), string(txt), true
}

// parseNginxTime reads "YYYY/MM/DD HH:MM:SS", local time (ngx_cached_err_log_time).
func parseNginxTime(b []byte) (time.Time, bool) {
	if len(b) != 19 || b[4] != '/' || b[7] != '/' || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	n := func(s []byte) int {
		if !digits(s) {
			return -1
		}
		v, _ := strconv.Atoi(string(s))
		return v
	}
	y, mo, d, h, mi, s := n(b[0:4]), n(b[5:7]), n(b[8:10]), n(b[11:13]), n(b[14:16]), n(b[17:19])
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60 {
		return time.Time{}, false
	}
	return time.Date(y, time.Month(mo), d, h, mi, s, 0, time.Local), true
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

// isHost: a responder host as ngx_parse_url keeps it: no spaces, quotes or commas.
func isHost(b []byte) bool {
	if len(b) == 0 || len(b) > 255 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c == '"' || c == ',' || c >= 0x7f {
			return false
		}
	}
	return true
}

// isHostPort: what ngx_sock_ntop prints: "1.2.3.4:80" or "[2001:db8::1]:80".
func isHostPort(b []byte) bool {
	if len(b) == 0 || len(b) > 64 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F', c == '.', c == ':', c == '[', c == ']', c == '%':
		default:
			return false
		}
	}
	return true
}

// NginxScanStats describes what ScanNginxLog read.
type NginxScanStats struct {
	Files   []string // oldest first
	Bytes   int64    // after decompression
	Lines   int64
	Skipped int64 // lines longer than the read buffer
}

const (
	nginxBufSize  = 64 * 1024 // one line never needs more (MaxNginxLine); memory stays flat
	maxRotated    = 60        // ea-nginx's logrotate keeps 21
	nginxProbeMax = 256 * 1024
)

// needle is in every line ClassifyNginx accepts (the context suffix names the certificate,
// and so does every start-up warning): a cheap prefilter.
var needle = []byte("certificate")

// ScanNginxLog calls fn, in log order, for every event stamped from since (inclusive) to
// until (exclusive) in the NGINX error log at path and, while the window reaches back past
// a file's first line, in logrotate's predecessors (ea-nginx: "rotate 21, compress,
// delaycompress, nodateext": error.log.1, then error.log.2.gz ...). A missing current log
// is an error (errors.Is(err, fs.ErrNotExist)); every file must be regular (see
// apacheconf.OpenRegular). Memory is one 64 KiB buffer whatever the size; ctx is checked
// between reads, and gzip input is fed 64 KiB at a time so that an archive crafted to
// inflate without end still stops.
func ScanNginxLog(ctx context.Context, path string, since, until time.Time, fn func(NginxEvent)) (NginxScanStats, error) {
	var st NginxScanStats
	files := []rotated{{path: path}}
	first, err := firstNginxTime(ctx, files[0])
	if err != nil {
		return st, err
	}
	for n := 1; n <= maxRotated && (first.IsZero() || first.After(since)); n++ {
		var f rotated
		var ferr error
		for _, cand := range []rotated{{path: fmt.Sprintf("%s.%d", path, n)}, {path: fmt.Sprintf("%s.%d.gz", path, n), gz: true}} {
			first, ferr = firstNginxTime(ctx, cand)
			if ferr == nil {
				f = cand
				break
			}
			if !errors.Is(ferr, fs.ErrNotExist) {
				return st, ferr
			}
		}
		if f.path == "" {
			break
		}
		files = append(files, f)
	}
	for i := len(files) - 1; i >= 0; i-- {
		if err := scanNginxFile(ctx, files[i], since, until, &st, fn); err != nil {
			return st, err
		}
	}
	return st, nil
}

type rotated struct {
	path string
	gz   bool
}

// firstNginxTime is the time of the first timestamped line in the file's head (zero if none).
func firstNginxTime(ctx context.Context, f rotated) (time.Time, error) {
	r, err := logwatch.OpenLog(ctx, f.path, f.gz)
	if err != nil {
		return time.Time{}, err
	}
	defer r.Close()
	br := bufio.NewReaderSize(io.LimitReader(logwatch.ContextReader(ctx, r), nginxProbeMax), 8*1024)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) >= 19 {
			if t, ok := parseNginxTime(line[:19]); ok {
				return t, nil
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if cerr := ctx.Err(); cerr != nil {
				return time.Time{}, fmt.Errorf("read %s: %w", f.path, cerr)
			}
			return time.Time{}, nil
		}
	}
}

func scanNginxFile(ctx context.Context, f rotated, since, until time.Time, st *NginxScanStats, fn func(NginxEvent)) error {
	r, err := logwatch.OpenLog(ctx, f.path, f.gz)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.path, err)
	}
	defer r.Close()
	st.Files = append(st.Files, f.path)
	br := bufio.NewReaderSize(logwatch.ContextReader(ctx, r), nginxBufSize)
	long := false
	for {
		line, err := br.ReadSlice('\n')
		st.Bytes += int64(len(line))
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			long = true
			continue
		case long:
			long = false
			st.Lines++
			st.Skipped++
		case len(line) > 0:
			st.Lines++
			if bytes.Contains(line, needle) {
				if ev := ClassifyNginx(line); ev.Kind != LogNone && !ev.Time.Before(since) && ev.Time.Before(until) {
					fn(ev)
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
	}
}
