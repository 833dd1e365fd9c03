// Package logwatch reads Apache's error_log: it classifies lines into mod_ssl stapling events
// (Classify, pure and allocation-light), joins transport errors to the responder failures they
// cause (Correlator), scans history fast (ScanHistory: binary search to the window start,
// byte prefilter, rotated predecessors) and follows the live file through cpanellogd's
// rotations (Follower).
//
// Only lines that Apache itself wrote in its default ErrorLogFormat (or in a custom one, read
// with a Format from ParseFormat), from module ssl, with the AH code in message position, are
// events. Client-controlled text (request URIs, Referer, PHP
// messages, ModSecurity fields) can contain any string, so it is never matched: parsing starts
// at the first byte of the line and every field up to the code must be exactly what Apache
// writes (FACTS.md sections 2 and 3; fail2ban's CVE-2013-2178 came from matching free text).
package logwatch

import (
	"bytes"
	"time"
)

// Kind is what a line means for stapling.
type Kind uint8

const (
	KindNone             Kind = iota
	KindResponderFailure      // AH01941: a renewal failed to get an answer; THE outage event
	KindTransport             // the OCSP HTTP client's error just before it: the cause
	KindCertStatus            // a response arrived but says revoked/unknown/invalid: not an outage
	KindInit                  // printed at every start and graceful restart: cert without OCSP URL
)

func (k Kind) String() string {
	return [...]string{"none", "responder_failure", "transport", "certificate_status", "init"}[k]
}

// Cause is why a responder failure happened, in the vocabulary the audit and probe share.
type Cause string

const (
	CauseDNS            Cause = "dns"
	CauseConnectRefused Cause = "connect_refused"
	CauseConnectTimeout Cause = "connect_timeout"
	CauseUnreachable    Cause = "unreachable"
	CauseSendFailed     Cause = "send_failed"
	CauseReadTimeout    Cause = "read_timeout"
	CauseHTTPStatus     Cause = "http_status"
	CauseEmptyResponse  Cause = "empty_response"
	CauseDecodeError    Cause = "decode_error"
	CauseUnspecified    Cause = "unspecified"
)

// MaxLineLen is the longest line we classify: 64 KiB is far beyond any line mod_ssl writes
// (its longest carry a certificate subject); longer lines are counted and skipped.
const MaxLineLen = 64 * 1024

// Event is a classified line. Zero Kind means the line is not a stapling event.
type Event struct {
	Kind      Kind
	Time      time.Time
	Code      string // "AH01941"
	Level     string // "error"
	Proc      string // "pid" or "pid:tid": the worker, to join a cause to its failure
	Status    string // apr status inside the parentheses: "111", "70007", "EAI 2"; "" if none
	Cause     Cause  // KindTransport only
	Responder string // host (and port) as logged, when the line names it
	Detail    string // the message after the code
}

type codeInfo struct {
	kind  Kind
	cause Cause // fixed cause for transport codes; "" = decided from the apr status
}

// codes is FACTS.md section 3. Anything else from mod_ssl is not a stapling event.
var codes = map[string]codeInfo{
	"AH01941": {KindResponderFailure, ""},
	"AH01972": {KindTransport, CauseDNS},
	"AH01974": {KindTransport, ""}, // connect: refused, timeout or unreachable by status
	"AH01976": {KindTransport, CauseSendFailed},
	"AH01977": {KindTransport, ""}, // read: timeout by status
	"AH01978": {KindTransport, ""},
	"AH02321": {KindTransport, CauseEmptyResponse},
	"AH01979": {KindTransport, CauseDecodeError},
	"AH01980": {KindTransport, CauseHTTPStatus},
	"AH01982": {KindTransport, ""},
	"AH01983": {KindTransport, ""},
	"AH01985": {KindTransport, ""},
	"AH01986": {KindTransport, CauseDecodeError},
	"AH01988": {KindTransport, CauseDecodeError},
	"AH01943": {KindCertStatus, ""},
	"AH01934": {KindCertStatus, ""},
	"AH01935": {KindCertStatus, ""},
	"AH01936": {KindCertStatus, ""},
	"AH02969": {KindCertStatus, ""},
	"AH02217": {KindInit, ""},
	"AH02218": {KindInit, ""},
	"AH02814": {KindInit, ""},
	"AH02604": {KindInit, ""},
	// Apache 2.4.6 (CentOS 7's) logs this at start-up for a certificate stapling cannot use,
	// where later versions log AH02604: an init event too, never a failure.
	"AH02235": {KindInit, ""},
}

// Classify parses one error_log line (without its newline) from its first byte:
//
//	[Www Mmm DD hh:mm:ss.uuuuuu YYYY] [ssl:level] [pid P(:tid T)] ((status)text: )([client a:p] )AHnnnnn: message
//
// It does no I/O and allocates only for events. Lines longer than MaxLineLen are not events.
func Classify(line []byte) Event {
	if len(line) > MaxLineLen {
		return Event{}
	}
	line = bytes.TrimSuffix(line, []byte{'\r'})
	ts, rest, ok := cutTimestamp(line)
	if !ok {
		return Event{}
	}
	// [ssl:level]
	if !bytes.HasPrefix(rest, []byte(" [ssl:")) {
		return Event{}
	}
	rest = rest[len(" [ssl:"):]
	end := bytes.IndexByte(rest, ']')
	if end < 1 || !isLower(rest[:end]) {
		return Event{}
	}
	level := rest[:end]
	rest = rest[end+1:]
	// [pid P] or [pid P:tid T]
	if !bytes.HasPrefix(rest, []byte(" [pid ")) {
		return Event{}
	}
	rest = rest[len(" [pid "):]
	end = bytes.IndexByte(rest, ']')
	if end < 1 || !isProc(rest[:end]) {
		return Event{}
	}
	proc := rest[:end]
	rest = rest[end+1:]
	if len(rest) == 0 || rest[0] != ' ' {
		return Event{}
	}
	rest = rest[1:]
	// (status)text:  - written by Apache from the APR status, before [client].
	var status []byte
	if len(rest) > 0 && rest[0] == '(' {
		end = bytes.IndexByte(rest, ')')
		if end < 2 || !isStatus(rest[1:end]) {
			return Event{}
		}
		status = rest[1:end]
		colon := bytes.Index(rest[end:], []byte(": "))
		if colon < 0 {
			return Event{}
		}
		rest = rest[end+colon+2:]
	}
	// [client ip:port]
	if bytes.HasPrefix(rest, []byte("[client ")) {
		end = bytes.Index(rest, []byte("] "))
		if end < 0 || !isAddr(rest[len("[client "):end]) {
			return Event{}
		}
		rest = rest[end+2:]
	}
	// AHnnnnn: at message position.
	info, ok := codeAt(rest)
	if !ok {
		return Event{}
	}
	t, ok := parseTime(ts)
	if !ok {
		return Event{}
	}
	return newEvent(info, t, rest, level, proc, status)
}

// codeAt reports whether msg, the text at message position, starts with "AHnnnnn: " naming
// one of the codes we classify.
func codeAt(msg []byte) (codeInfo, bool) {
	if len(msg) < 9 || msg[0] != 'A' || msg[1] != 'H' || !isDigits(msg[2:7]) || msg[7] != ':' || msg[8] != ' ' {
		return codeInfo{}, false
	}
	info, ok := codes[string(msg[:7])]
	return info, ok
}

// newEvent builds the event for a line whose header has been parsed and whose message, msg,
// starts with a code codeAt accepted. It is shared by Classify and Format.Classify, so that
// the code and cause logic exists once.
func newEvent(info codeInfo, t time.Time, msg, level, proc, status []byte) Event {
	ev := Event{
		Kind:   info.kind,
		Time:   t,
		Code:   string(msg[:7]),
		Level:  string(level),
		Proc:   string(proc),
		Status: string(status),
		Detail: string(msg[9:]),
	}
	if ev.Kind == KindTransport {
		ev.Cause = transportCause(ev.Code, info.cause, ev.Status, msg[9:])
		ev.Responder = responderOf(ev.Code, msg[9:])
	}
	return ev
}

// transportCause decides the cause of a transport line from its code and APR status.
func transportCause(code string, fixed Cause, status string, msg []byte) Cause {
	if code == "AH01980" && bytes.HasSuffix(msg, []byte(": (none)")) {
		// No status line at all: the responder closed or timed out before answering.
		return CauseEmptyResponse
	}
	if fixed != "" {
		return fixed
	}
	timeout := status == "70007" || status == "110" || status == "60"
	if code == "AH01974" {
		switch {
		case status == "111" || status == "61":
			return CauseConnectRefused
		case timeout:
			return CauseConnectTimeout
		case status == "113" || status == "101" || status == "65" || status == "51" || status == "99":
			return CauseUnreachable
		case len(status) > 4 && status[:4] == "EAI ":
			return CauseDNS
		}
		return CauseUnspecified
	}
	if timeout {
		return CauseReadTimeout
	}
	return CauseUnspecified
}

// responderOf extracts the responder mod_ssl names: AH01974/AH01976 quote it ('host:port'),
// AH01972 writes it unquoted at the end.
func responderOf(code string, msg []byte) string {
	switch code {
	case "AH01974", "AH01976":
		i := bytes.IndexByte(msg, '\'')
		j := bytes.LastIndexByte(msg, '\'')
		if i >= 0 && j > i+1 {
			return string(msg[i+1 : j])
		}
	case "AH01972":
		const p = "could not resolve address of OCSP responder "
		if i := bytes.Index(msg, []byte(p)); i >= 0 {
			if host := bytes.TrimSpace(msg[i+len(p):]); len(host) > 0 && bytes.IndexByte(host, ' ') < 0 {
				return string(host)
			}
		}
	}
	return ""
}

// cutTimestamp splits "[<24 or 31 byte timestamp>]" off the line start.
func cutTimestamp(line []byte) (ts, rest []byte, ok bool) {
	if len(line) < 26 || line[0] != '[' {
		return nil, nil, false
	}
	for _, n := range [...]int{31, 24} { // with microseconds (2.4), without (2.2)
		if len(line) > n+1 && line[n+1] == ']' {
			return line[1 : n+1], line[n+2:], true
		}
	}
	return nil, nil, false
}

var months = map[string]time.Month{
	"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
	"Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}

// timeLoc is where error_log timestamps live: Apache writes local time without a zone.
var timeLoc = time.Local

// parseTime reads "Www Mmm DD hh:mm:ss[.uuuuuu] YYYY" by position (time.Parse is 10x slower
// and this runs on every probe of the binary search).
func parseTime(b []byte) (time.Time, bool) {
	if len(b) != 24 && len(b) != 31 {
		return time.Time{}, false
	}
	if b[3] != ' ' || b[7] != ' ' || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	mon, ok := months[string(b[4:7])]
	if !ok {
		return time.Time{}, false
	}
	day, ok1 := num(b[8:10])
	hh, ok2 := num(b[11:13])
	mm, ok3 := num(b[14:16])
	ss, ok4 := num(b[17:19])
	usec, yearAt := 0, 20
	ok5 := true
	if len(b) == 31 {
		if b[19] != '.' {
			return time.Time{}, false
		}
		usec, ok5 = num(b[20:26])
		yearAt = 27
	}
	if b[yearAt-1] != ' ' {
		return time.Time{}, false
	}
	year, ok6 := num(b[yearAt : yearAt+4])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, false
	}
	return time.Date(year, mon, day, hh, mm, ss, usec*1000, timeLoc), true
}

// num parses decimal digits; a leading space pads a day ("Nov  1").
func num(b []byte) (int, bool) {
	n := 0
	for i, c := range b {
		if c == ' ' && i == 0 && len(b) == 2 {
			continue
		}
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func isLower(b []byte) bool {
	for _, c := range b {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// isProc: "P" or "P:tid T".
func isProc(b []byte) bool {
	pid, tid, found := bytes.Cut(b, []byte(":tid "))
	return isDigits(pid) && (!found || isDigits(tid))
}

// isStatus: an APR status number, or "EAI n" for resolver errors.
func isStatus(b []byte) bool {
	if bytes.HasPrefix(b, []byte("EAI ")) {
		b = b[4:]
		if len(b) > 0 && b[0] == '-' {
			b = b[1:]
		}
	}
	return isDigits(b) && len(b) <= 6
}

// isAddr: what Apache prints for a client address: IPv4/IPv6 characters and a port.
func isAddr(b []byte) bool {
	if len(b) == 0 || len(b) > 64 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F', c == '.', c == ':', c == '%':
		default:
			return false
		}
	}
	return true
}
