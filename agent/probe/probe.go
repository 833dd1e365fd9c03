// Package probe is what a TLS client sees and what the OCSP responders answer, from this host:
// handshakes with the SSL vhosts (each protocol version alone, the default offer, the staple,
// the presented certificate), real OCSP requests as mod_ssl sends them, and the certificate
// facts the agent's decisions rest on (cPanel's combined certificate files, Must-Staple).
package probe

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/stapling-agent/stapling-agent/agent/escape"
	"github.com/stapling-agent/stapling-agent/apacheconf"
	"github.com/stapling-agent/stapling-agent/logwatch"
)

// Schema versions the probe JSON.
const Schema = "stapling-agent/probe/v1"

// oidTLSFeature is the TLS Feature extension (RFC 7633); status_request (5) in it is
// Must-Staple: Firefox hard-fails when such a certificate comes without a staple.
var oidTLSFeature = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}

// Report is the probe's result; its JSON form is documented in the README.
type Report struct {
	Schema      string            `json:"schema"`
	GeneratedAt time.Time         `json:"generated_at"`
	Targets     []TargetResult    `json:"targets"`
	Responders  []ResponderResult `json:"responders"`
	// Incomplete says why the probe stopped early (its deadline, a signal), when it did.
	Incomplete string `json:"incomplete,omitempty"`
}

type TargetResult struct {
	Address    string `json:"address"`
	ServerName string `json:"servername"`
	VHost      string `json:"vhost,omitempty"` // file:line of the <VirtualHost>
	Role       string `json:"role,omitempty"`  // frontend | backend, behind another server
	// Status is how far the probe got with the target; Error says why when it is not probed.
	Status Status `json:"status"`
	// SharedWith names the other targets (their vhost's file:line, else address and SNI
	// name) answered by the same handshakes: same address, SNI name and configured
	// certificate, so probed once (Run) and reported for each.
	SharedWith []string          `json:"shared_with,omitempty"`
	Protocols  map[string]string `json:"protocols"` // accepted | alert | reset | timeout | stalled | error
	Alerts     map[string]string `json:"alerts,omitempty"`
	Negotiated struct {
		Version string `json:"version"`
		Cipher  string `json:"cipher"`
	} `json:"negotiated"`
	HandshakeMS float64 `json:"handshake_ms"`
	Error       string  `json:"error,omitempty"`
	Staple      struct {
		Present    bool       `json:"present"`
		Status     string     `json:"status"`      // OCSP response status: successful, tryLater, ...
		CertStatus string     `json:"cert_status"` // good | revoked | unknown
		NextUpdate *time.Time `json:"next_update"`
	} `json:"staple"`
	Certificate struct {
		Subject           string    `json:"subject"`
		SANs              []string  `json:"sans"`
		NotAfter          time.Time `json:"not_after"`
		OCSPURLs          []string  `json:"ocsp_urls"`
		MustStaple        bool      `json:"must_staple"`
		MatchesConfigured *bool     `json:"matches_configured"` // null when nothing is configured for it
		Chain             string    `json:"chain"`              // "ok" or why verification failed
	} `json:"certificate"`
}

// Status is how far the probe got with a target.
type Status string

const (
	// StatusProbed: the default handshake completed, and every protocol was tried.
	StatusProbed Status = "probed"
	// StatusUnreachable: no TCP connection (refused, timed out, no route); nothing else is
	// tried, so an unreachable vhost costs one connect timeout.
	StatusUnreachable Status = "unreachable"
	// StatusStalled: connected, but the default handshake got no answer within the timeout
	// (ErrStalled); nothing else is tried.
	StatusStalled Status = "stalled"
	// StatusClosed: connected, but the server closed or reset the connection, or answered
	// with something that is not TLS (plain HTTP on the port); nothing else is tried.
	StatusClosed Status = "closed"
	// StatusHandshakeFailed: the default offer got a TLS alert (an old-protocols-only
	// server, a missing certificate for the name) or an answer the client could not take
	// (a certificate it cannot parse); each protocol is still tried, the server answers TLS.
	StatusHandshakeFailed Status = "handshake_failed"
	// StatusNotProbed: the probe's deadline (or a signal) came before the target was
	// finished; Error says which part was cut short.
	StatusNotProbed Status = "not_probed"
)

type ResponderResult struct {
	URL        string  `json:"url"`
	OK         bool    `json:"ok"`
	LatencyMS  float64 `json:"latency_ms"`
	HTTPStatus int     `json:"http_status"`
	OCSPStatus string  `json:"ocsp_status"`
	CertStatus string  `json:"cert_status"`
	Cause      string  `json:"cause,omitempty"`
	Error      string  `json:"error,omitempty"`
	// NotProbed: the probe's deadline (or a signal) came before the responder answered.
	NotProbed bool `json:"not_probed,omitempty"`
}

// Target is one TLS endpoint to probe and what Apache is configured to serve there.
type Target struct {
	Address, ServerName string
	VHost               string // file:line of the <VirtualHost>, when it comes from the config
	// Role says which side a target is when another server answers on the HTTPS port:
	// "frontend" (what visitors reach, e.g. NGINX) or "backend" (Apache behind it); "" when
	// Apache itself answers.
	Role       string
	Configured *CertFile // the certificate configured for it, when readable
}

// Name is how an operator recognises the target: its SNI name, else its address.
func (t Target) Name() string {
	if t.ServerName != "" {
		return t.ServerName
	}
	return t.Address
}

// CertFile is a cPanel combined certificate file: certificate, key, CA bundle.
type CertFile struct {
	Leaf   *x509.Certificate
	Issuer *x509.Certificate // nil when the file does not carry it
}

// LoadCertFile reads the leaf certificate and its issuer from a PEM file, once per version of
// the file: the result is cached by path, identity, size and modification time, since an
// audit reads every SSL vhost's certificate (Must-Staple, responders) and the daemon reads
// them again whenever the config changes; a 3,000-account host has thousands.
func LoadCertFile(path string) (*CertFile, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	key := certKey{path: path, size: info.Size(), mtime: info.ModTime().UnixNano()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		key.ino = st.Ino
	}
	certCache.Lock()
	cf, ok := certCache.m[key]
	certCache.Unlock()
	if ok {
		return cf, nil
	}
	cf, err = loadCertFile(path)
	if err != nil {
		return nil, err
	}
	certCache.Lock()
	if len(certCache.m) >= maxCachedCerts {
		clear(certCache.m) // a new generation: bounded memory, and stale entries go
	}
	certCache.m[key] = cf
	certCache.Unlock()
	return cf, nil
}

// maxCachedCerts bounds the cache: a certificate and its issuer are a few KB parsed.
const maxCachedCerts = 20000

type certKey struct {
	path        string
	size, mtime int64
	ino         uint64
}

var certCache = struct {
	sync.Mutex
	m map[certKey]*CertFile
}{m: map[certKey]*CertFile{}}

func loadCertFile(path string) (*CertFile, error) {
	// Bounded and never blocking: a tenant can point its vhost's certificate at a FIFO or a device.
	data, err := apacheconf.ReadFile(path, apacheconf.MaxCertFile)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if len(certs) > 0 {
			// The chain after the leaf is the same CA bundle in thousands of files: parsed
			// and kept once.
			if c := issuers.get(b.Bytes); c != nil {
				certs = append(certs, c)
			}
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	cf := &CertFile{Leaf: certs[0]}
	for _, c := range certs[1:] {
		if bytes.Equal(c.RawSubject, cf.Leaf.RawIssuer) {
			cf.Issuer = c
		}
	}
	return cf, nil
}

// issuers interns the certificates that follow a leaf in a certificate file, by their DER
// bytes. Bounded: past maxIssuers distinct ones, they are parsed each time.
var issuers = &certIntern{m: map[string]*x509.Certificate{}}

const maxIssuers = 1000

type certIntern struct {
	sync.Mutex
	m map[string]*x509.Certificate
}

func (ci *certIntern) get(der []byte) *x509.Certificate {
	ci.Lock()
	c, ok := ci.m[string(der)]
	ci.Unlock()
	if ok {
		return c
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	ci.Lock()
	if len(ci.m) < maxIssuers {
		ci.m[string(der)] = c
	}
	ci.Unlock()
	return c
}

// MustStaple reports whether c carries the TLS Feature extension with status_request.
func MustStaple(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidTLSFeature) {
			var features []int
			if _, err := asn1.Unmarshal(e.Value, &features); err == nil {
				for _, f := range features {
					if f == 5 {
						return true
					}
				}
			}
		}
	}
	return false
}

// MustStapleVHosts are the SSL vhosts among vhosts whose configured certificate is
// Must-Staple: Firefox hard-fails on them when no staple is sent (FACTS.md section 4), so
// turning stapling off for them breaks them. Each certificate file is read.
func MustStapleVHosts(l *apacheconf.Layout, vhosts []apacheconf.VHost) []apacheconf.VHost {
	var out []apacheconf.VHost
	for _, v := range vhosts {
		if !v.SSL || v.CertFile == "" {
			continue
		}
		if cf, err := LoadCertFile(l.Path(v.CertFile)); err == nil && MustStaple(cf.Leaf) {
			out = append(out, v)
		}
	}
	return out
}

// Targets are the SSL vhosts of the config, at most limit of them (0: all), each probed at
// one address with one SNI name (TargetAddress, SNIName). Each configured certificate file is
// read, so stopping at the limit saves reading thousands on a large host. Vhosts that share
// address and SNI name (a duplicated vhost, nameless vhosts on one address) are all kept:
// Run probes them once and reports each.
func Targets(l *apacheconf.Layout, cfg *apacheconf.Config, limit int) []Target {
	var out []Target
	for _, v := range cfg.VHosts {
		if limit > 0 && len(out) == limit {
			break
		}
		if !v.SSL || len(v.Addrs) == 0 {
			continue
		}
		t := Target{Address: TargetAddress(v.Addrs[0]), ServerName: SNIName(v), VHost: fmt.Sprintf("%s:%d", v.File, v.Line)}
		if v.CertFile != "" {
			t.Configured, _ = LoadCertFile(l.Path(v.CertFile))
		}
		out = append(out, t)
	}
	return out
}

// TargetAddress is where to connect for a <VirtualHost> address: the address as written, its
// port 443 when it names none. `*`, `_default_` and the unspecified addresses (0.0.0.0, [::])
// match connections to any address of the host, so the probe uses loopback: 127.0.0.1 ([::1]
// for [::]). An IPv6 address stays bracketed ("[2001:db8::10]:443"; Apache requires the
// brackets, and so does a dial). A vhost with several addresses (cPanel writes an account's
// dedicated IPv6 address and its IPv4 one in one vhost) is probed at the first one written:
// mod_ssl staples per certificate (one cache entry, whichever address the client came to), so
// one address shows the vhost's stapling, and one handshake per vhost keeps a stalled host's
// probe to one timeout a vhost.
//
// Limit: Apache considers `*` vhosts only for an address no IP-specific vhost on that port
// claims, and cPanel's proxy-subdomain vhost claims 127.0.0.1:443; there the probe reaches
// that vhost instead, and says so (matches_configured false). The Listen directives would tell
// which other local address reaches the `*` vhost; the config reading does not keep them.
func TargetAddress(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: "*", "192.0.2.1", "[2001:db8::1]" (Apache's <VirtualHost> takes each).
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), "443"
	}
	if port == "*" {
		port = "443"
	}
	switch host {
	case "*", "_default_", "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// probeLabel stands for the label a client puts where a wildcard name has `*`: any label
// reaches a vhost through a pattern, and this one names who asked.
const probeLabel = "stapling-agent-probe"

// SNIName is the name the probe sends in SNI to reach v as a client does: its ServerName
// without the scheme or port Apache allows there ("https://www.example.com:443" is sent as
// "www.example.com"; mod_ssl compares the SNI with the host part only). cPanel's encoding of a
// wildcard subdomain's ServerName (`_wildcard_.example.com`, formerly
// `wildcard_safe.example.com`) is a plain name that Apache matches exactly, so it is sent as
// it is: it reaches exactly that vhost, and the wildcard certificate covers it.
//
// A vhost without a ServerName (it inherits the main server's), or with a pattern there
// (Apache refuses to start with one, "Invalid ServerName ... use ServerAlias", but the file on
// disk may hold it), is reached by its ServerAlias: the first plain alias, else the first
// alias pattern (else the ServerName's) with each `*` made the label "stapling-agent-probe"
// and each `?` an "x". That is a name such a client sends, and the certificate is verified
// for it: a literal "*.example.com" is no DNS name (RFC 6066 section 3) and no certificate is
// valid for it. With neither, no SNI is sent.
func SNIName(v apacheconf.VHost) string {
	name := hostOf(v.ServerName)
	if name != "" && !isPattern(name) {
		return name
	}
	pattern := ""
	for _, a := range v.Aliases {
		a = hostOf(a)
		if !isPattern(a) {
			return a
		}
		if pattern == "" {
			pattern = a
		}
	}
	if pattern == "" {
		pattern = name
	}
	return strings.NewReplacer("*", probeLabel, "?", "x").Replace(pattern)
}

func isPattern(name string) bool { return strings.ContainsAny(name, "*?") }

// hostOf is the host part of a ServerName or ServerAlias value: [scheme://]host[:port].
func hostOf(name string) string {
	if _, rest, ok := strings.Cut(name, "://"); ok {
		name = rest
	}
	if h, _, err := net.SplitHostPort(name); err == nil {
		return strings.Trim(h, "[]")
	}
	return name
}

var tlsVersions = []struct {
	name string
	v    uint16
}{{"TLS1.0", tls.VersionTLS10}, {"TLS1.1", tls.VersionTLS11}, {"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

// protocolName is the report's name of a version ("TLS1.2"), "" for one it does not name.
func protocolName(v uint16) string {
	for _, p := range tlsVersions {
		if p.v == v {
			return p.name
		}
	}
	return ""
}

// ErrStalled is a handshake that connected but got no answer in time: during a stapling
// outage mod_ssl holds every handshake that asks for a staple while it waits on the responder
// (FACTS.md section 1), so the server is up and the protocol fine, only slow.
var ErrStalled = errors.New("handshake stalled: connected, but no answer within the timeout (mod_ssl waiting on an OCSP responder?)")

// ErrUnreachable is a target the probe could not connect to: refused, timed out, no route.
var ErrUnreachable = errors.New("unreachable")

// errCutShort is a handshake the probe's own deadline (or a signal) ended, not the target.
var errCutShort = errors.New("cut short")

// ended reports whether ctx is over: cancelled, or its deadline passed. The clock is read
// too: under load the deadline's timer can fire after the deadline has passed, and a
// handshake started then would fail at once with its own "i/o timeout", taken for the
// target's.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func dialTLS(parent context.Context, address string, cfg *tls.Config, timeout time.Duration) (*tls.Conn, time.Duration, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	start := time.Now()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
	if err != nil {
		if ended(parent) {
			return nil, time.Since(start), fmt.Errorf("%w while connecting", errCutShort)
		}
		return nil, time.Since(start), fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		_ = raw.Close() // the handshake's error is the one to report
		switch {
		case ended(parent):
			return nil, time.Since(start), fmt.Errorf("%w during the handshake", errCutShort)
		case ctx.Err() != nil:
			return nil, time.Since(start), fmt.Errorf("%w (%v)", ErrStalled, err)
		}
		return nil, time.Since(start), err
	}
	return c, time.Since(start), nil
}

// handshakeOutcome names what a client offering one version sees.
func handshakeOutcome(err error) (string, string) {
	var alert tls.AlertError
	var netErr net.Error
	switch {
	case err == nil:
		return "accepted", ""
	case errors.As(err, &alert), strings.Contains(err.Error(), "remote error: tls: "):
		msg := err.Error()
		if i := strings.Index(msg, "remote error: tls: "); i >= 0 {
			msg = msg[i+len("remote error: tls: "):]
		}
		return "alert", msg
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return "reset", ""
	case errors.Is(err, ErrStalled):
		return "stalled", ""
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout", ""
	}
	return "error", escape.Line(err.Error())
}

// versionSeen ends a protocol-only handshake as soon as the server has answered the offer
// with its version and certificate (tls.Config.VerifyConnection runs then): whether a
// version is accepted is known, and the rest of the handshake (the client's key exchange,
// the signature check, both Finished messages, the server's session ticket) would only cost
// both sides CPU. The server sees the client abort with an alert (mod_ssl logs that at
// LogLevel info, below cPanel's default warn).
type versionSeen struct{ version uint16 }

func (versionSeen) Error() string { return "version seen" }

// offerVersions offers lo..hi alone and returns the version the server picked, or the
// handshake's error (an alert when it shares none of them).
func offerVersions(ctx context.Context, t Target, lo, hi uint16, timeout time.Duration) (uint16, error) {
	cfg := &tls.Config{ServerName: t.ServerName, MinVersion: lo, MaxVersion: hi, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error { return versionSeen{cs.Version} }}
	c, _, err := dialTLS(ctx, t.Address, cfg, timeout)
	if c != nil { // not reached: VerifyConnection always ends the handshake
		v := c.ConnectionState().Version
		_ = c.Close()
		return v, nil
	}
	var seen versionSeen
	if errors.As(err, &seen) {
		return seen.version, nil
	}
	return 0, err
}

// notProbed marks r as cut short by the probe's deadline or a signal: why, and nothing else.
func notProbed(r *TargetResult, why string) {
	r.Status, r.Error = StatusNotProbed, why
	clear(r.Protocols)
	clear(r.Alerts)
}

func probeTLS(ctx context.Context, t Target, timeout time.Duration) TargetResult {
	r := TargetResult{Address: t.Address, ServerName: t.ServerName, VHost: t.VHost, Role: t.Role, Protocols: map[string]string{}, Alerts: map[string]string{}}
	if ended(ctx) {
		notProbed(&r, "not probed: the probe's deadline came first")
		return r
	}
	// The default offer first: when it cannot connect, stalls or is dropped without a TLS
	// answer, every other handshake would be too, so none is tried: such a vhost costs one
	// connection and at most one timeout, not five.
	c, dur, err := dialTLS(ctx, t.Address, &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: true}, timeout)
	r.HandshakeMS = float64(dur.Microseconds()) / 1000
	var cs tls.ConnectionState
	if c != nil {
		// Closed before the next handshake: one connection at a time per target, so the
		// probe's concurrency is the number of connections it holds.
		cs = c.ConnectionState()
		_ = c.Close()
	}
	r.Status = StatusProbed
	if err != nil {
		r.Error = escape.Line(err.Error())
		out, _ := handshakeOutcome(err)
		switch {
		case errors.Is(err, errCutShort):
			notProbed(&r, "not probed: the probe's deadline came during its first handshake")
			return r
		case errors.Is(err, ErrUnreachable):
			r.Status = StatusUnreachable
			return r
		case errors.Is(err, ErrStalled):
			r.Status = StatusStalled
			for _, v := range tlsVersions {
				r.Protocols[v.name] = "stalled"
			}
			return r
		case out == "reset", errors.As(err, new(tls.RecordHeaderError)):
			r.Status = StatusClosed // dropped, or no TLS there at all
			return r
		}
		// An alert, or a TLS answer the client could not take (a certificate it cannot
		// parse, a version it does not speak): the server answers TLS, so each protocol is
		// still tried.
		r.Status = StatusHandshakeFailed
	}
	// What one handshake already answers is not asked again. The default offer (TLS 1.2-1.3)
	// negotiated a version: offered alone it is accepted too. TLS 1.0 and 1.1 go in one offer
	// first: a server that picks neither from it supports neither (RFC 8446 section 4.2.1, RFC
	// 5246 appendix E.1: the server picks the highest version it shares with the offer), so its
	// alert answers for both, and it is the usual answer now; one it accepts says which. A
	// modern vhost so costs three handshakes, not five.
	if err == nil {
		r.Protocols[protocolName(cs.Version)] = "accepted"
	}
	lv, lerr := offerVersions(ctx, t, tls.VersionTLS10, tls.VersionTLS11, timeout)
	switch out, detail := handshakeOutcome(lerr); {
	case errors.Is(lerr, errCutShort):
		notProbed(&r, "not probed: the probe's deadline came during its TLS 1.0-1.1 handshake")
		return r
	case lerr == nil:
		r.Protocols[protocolName(lv)] = "accepted"
	case out == "alert":
		for _, name := range []string{"TLS1.0", "TLS1.1"} {
			r.Protocols[name], r.Alerts[name] = out, detail
		}
	}
	for _, v := range tlsVersions {
		if _, ok := r.Protocols[v.name]; ok {
			continue
		}
		_, err := offerVersions(ctx, t, v.v, v.v, timeout)
		if errors.Is(err, errCutShort) {
			notProbed(&r, fmt.Sprintf("not probed: the probe's deadline came during its %s handshake", v.name))
			return r
		}
		out, detail := handshakeOutcome(err)
		r.Protocols[v.name] = out
		if detail != "" {
			r.Alerts[v.name] = detail
		}
	}
	if err != nil {
		return r
	}
	// The default offer, as a browser: verification is done below and reported, never fatal.
	r.Negotiated.Version = tls.VersionName(cs.Version)
	r.Negotiated.Cipher = tls.CipherSuiteName(cs.CipherSuite)
	if len(cs.PeerCertificates) == 0 {
		return r
	}
	leaf := cs.PeerCertificates[0]
	cert := &r.Certificate
	cert.Subject, cert.SANs, cert.NotAfter, cert.OCSPURLs = leaf.Subject.String(), leaf.DNSNames, leaf.NotAfter.UTC(), leaf.OCSPServer
	for _, ip := range leaf.IPAddresses {
		cert.SANs = append(cert.SANs, ip.String())
	}
	cert.MustStaple = MustStaple(leaf)
	if t.Configured != nil {
		m := bytes.Equal(leaf.Raw, t.Configured.Leaf.Raw)
		cert.MatchesConfigured = &m
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	cert.Chain = "ok"
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: t.ServerName, Intermediates: inter}); err != nil {
		cert.Chain = escape.Line(err.Error())
	}
	if len(cs.OCSPResponse) > 0 {
		r.Staple.Present = true
		var issuer *x509.Certificate
		if len(cs.PeerCertificates) > 1 {
			issuer = cs.PeerCertificates[1]
		} else if t.Configured != nil {
			issuer = t.Configured.Issuer
		}
		resp, err := VerifyOCSP(cs.OCSPResponse, leaf, issuer)
		r.Staple.Status, r.Staple.CertStatus = ocspOutcome(resp, err)
		if resp != nil && !resp.NextUpdate.IsZero() {
			nu := resp.NextUpdate.UTC()
			r.Staple.NextUpdate = &nu
		}
	}
	return r
}

func ocspOutcome(resp *ocsp.Response, err error) (status, cert string) {
	var re ocsp.ResponseError
	switch {
	case errors.As(err, &re):
		return re.Status.String(), ""
	case err != nil:
		return "unparseable", ""
	}
	switch resp.Status {
	case ocsp.Good:
		return "successful", "good"
	case ocsp.Revoked:
		return "successful", "revoked"
	}
	return "successful", "unknown"
}

// probeResponder sends a real OCSP request for leaf over plain HTTP, as mod_ssl does.
func probeResponder(ctx context.Context, url string, cf *CertFile, timeout time.Duration) ResponderResult {
	r := ResponderResult{URL: url}
	fail := func(cause logwatch.Cause, err error) ResponderResult {
		r.Cause, r.Error = string(cause), escape.Line(err.Error())
		return r
	}
	if !strings.HasPrefix(url, "http://") {
		return fail(logwatch.CauseUnspecified, errors.New("mod_ssl fetches OCSP over plain http only"))
	}
	if cf.Issuer == nil {
		return fail(logwatch.CauseUnspecified, errors.New("issuer certificate not in the certificate file; cannot build a request"))
	}
	body, err := ocsp.CreateRequest(cf.Leaf, cf.Issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return fail(logwatch.CauseUnspecified, err)
	}
	// Separate dial and header timeouts, so the cause can tell connect from read.
	tr := &http.Transport{
		Proxy:                 nil, // mod_ssl ignores proxy environment variables
		DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
		ResponseHeaderTimeout: timeout,
		DisableKeepAlives:     true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fail(logwatch.CauseUnspecified, err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	r.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		return fail(netCause(err), err)
	}
	defer resp.Body.Close()
	r.HTTPStatus = resp.StatusCode
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail(logwatch.CauseReadTimeout, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail(logwatch.CauseHTTPStatus, fmt.Errorf("HTTP %s", resp.Status))
	}
	parsed, err := VerifyOCSP(data, cf.Leaf, cf.Issuer)
	r.OCSPStatus, r.CertStatus = ocspOutcome(parsed, err)
	var re ocsp.ResponseError
	if err != nil && !errors.As(err, &re) {
		return fail(logwatch.CauseDecodeError, err)
	}
	r.OK = err == nil
	if err != nil {
		r.Error = escape.Line(err.Error())
	}
	return r
}

// netCause maps a transport error to the audit's cause vocabulary.
func netCause(err error) logwatch.Cause {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		return logwatch.CauseDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return logwatch.CauseConnectRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return logwatch.CauseUnreachable
	case errors.As(err, &opErr) && opErr.Op == "dial" && opErr.Timeout():
		return logwatch.CauseConnectTimeout
	case strings.Contains(err.Error(), "timeout awaiting response headers"):
		return logwatch.CauseReadTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's name for a connection the server closed before answering.
		strings.Contains(err.Error(), "server closed idle connection"):
		return logwatch.CauseEmptyResponse
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return logwatch.CauseReadTimeout
	}
	return logwatch.CauseUnspecified
}

// Options tune a probe run.
type Options struct {
	Timeout time.Duration // each handshake and OCSP request
	// Concurrency is how many targets are probed at once, each one connection at a time,
	// so it bounds the connections the probe holds to the host's servers (0:
	// DefaultConcurrency). OCSP requests run beside them, four at a time.
	Concurrency int
}

// DefaultConcurrency is 4 handshakes a core, at least 4: a handshake waits on the server's
// signature (mod_ssl's RSA sign is its main cost), so a few per core keep both sides busy,
// and more only queue in Apache's accept backlog. Measured on the lab (500 vhosts, 2 cores
// shared with other work, so noisy): 4, 8 and 16 within the noise of each other, 32 slower.
func DefaultConcurrency() int { return max(4, 4*runtime.GOMAXPROCS(0)) }

// Run probes targets (TLS) and the OCSP URLs of their configured certificates, with the
// default concurrency.
func Run(ctx context.Context, targets []Target, timeout time.Duration) *Report {
	return RunWith(ctx, targets, Options{Timeout: timeout})
}

// RunWith probes targets and the responders of their configured certificates at once.
// Targets sharing address, SNI name and configured certificate get the same handshakes, so
// they are probed once and each is reported, naming the others (SharedWith). When ctx ends
// (the deadline, a signal) the handshakes under way stop and every target not finished is
// reported as StatusNotProbed, never left out; the caller says why in Report.Incomplete.
func RunWith(ctx context.Context, targets []Target, o Options) *Report {
	if o.Concurrency < 1 {
		o.Concurrency = DefaultConcurrency()
	}
	rep := &Report{Schema: Schema, GeneratedAt: time.Now().UTC(), Targets: make([]TargetResult, len(targets)), Responders: []ResponderResult{}}
	groups := sameHandshakes(targets)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rep.Responders = Responders(ctx, targets, o.Timeout)
	}()
	parallel(len(groups), o.Concurrency, func(i int) {
		g := groups[i]
		first := probeTLS(ctx, targets[g[0]], o.Timeout)
		for _, j := range g {
			rep.Targets[j] = sharedResult(first, targets, g, j)
		}
	})
	wg.Wait()
	return rep
}

// sameHandshakes groups the indexes of targets a handshake cannot tell apart: same address,
// same SNI name, same configured certificate (none counts as one). Groups keep the targets'
// order, by their first member.
func sameHandshakes(targets []Target) [][]int {
	var groups [][]int
	at := map[string]int{}
	for i, t := range targets {
		cert := ""
		if t.Configured != nil {
			cert = string(t.Configured.Leaf.Raw)
		}
		k := t.Address + "\x00" + t.ServerName + "\x00" + cert
		if g, ok := at[k]; ok {
			groups[g] = append(groups[g], i)
			continue
		}
		at[k] = len(groups)
		groups = append(groups, []int{i})
	}
	return groups
}

// sharedResult is the result of group g's handshakes for its member j: j's own vhost and
// role, and the others of the group named.
func sharedResult(r TargetResult, targets []Target, g []int, j int) TargetResult {
	t := targets[j]
	r.VHost, r.Role = t.VHost, t.Role
	if len(g) == 1 {
		return r
	}
	r.Protocols, r.Alerts = maps.Clone(r.Protocols), maps.Clone(r.Alerts)
	if m := r.Certificate.MatchesConfigured; m != nil {
		v := *m
		r.Certificate.MatchesConfigured = &v
	}
	r.SharedWith = nil
	for _, k := range g {
		if k == j {
			continue
		}
		name := targets[k].VHost
		if name == "" {
			name = strings.TrimSpace(targets[k].Address + " " + targets[k].ServerName)
		}
		r.SharedWith = append(r.SharedWith, name)
	}
	return r
}

// Responders sends one OCSP request to each distinct responder URL of the targets'
// configured certificates. Those ctx ended before are reported NotProbed.
func Responders(ctx context.Context, targets []Target, timeout time.Duration) []ResponderResult {
	urls := map[string]*CertFile{}
	for _, t := range targets {
		if t.Configured == nil {
			continue
		}
		for _, u := range t.Configured.Leaf.OCSPServer {
			if _, ok := urls[u]; !ok {
				urls[u] = t.Configured
			}
		}
	}
	keys := make([]string, 0, len(urls))
	for u := range urls {
		keys = append(keys, u)
	}
	sort.Strings(keys)
	out := make([]ResponderResult, len(keys))
	parallel(len(keys), 4, func(i int) {
		out[i] = probeResponder(ctx, keys[i], urls[keys[i]], timeout)
		if ended(ctx) && !out[i].OK {
			out[i] = ResponderResult{URL: keys[i], NotProbed: true, Error: "not probed: the probe's deadline came first"}
		}
	})
	return out
}

// parallel runs fn(0..n-1) on at most workers goroutines; four for OCSP requests is enough
// to overlap responder timeouts without hammering a CA's responder.
func parallel(n, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < min(n, workers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// Empty reports whether nothing was probed.
func (rep *Report) Empty() bool { return len(rep.Targets) == 0 && len(rep.Responders) == 0 }

// Healthy reports whether every target handshook and every responder answered.
func (rep *Report) Healthy() bool {
	if rep.Incomplete != "" {
		return false
	}
	for _, t := range rep.Targets {
		if t.Error != "" {
			return false
		}
	}
	for _, r := range rep.Responders {
		if !r.OK {
			return false
		}
	}
	return true
}

// RenderText writes the report for people. Names and errors can come from a customer's
// certificate or a remote server, so every one of them is escaped.
func RenderText(w io.Writer, rep *Report) {
	yes := map[bool]string{true: "yes", false: "no"}
	if rep.Incomplete != "" {
		fmt.Fprintf(w, "INCOMPLETE: %s\n", rep.Incomplete)
	}
	for _, t := range rep.Targets {
		sni := t.ServerName
		if sni == "" {
			sni = "no SNI"
		}
		role := ""
		if t.Role != "" {
			role = ", " + escape.Line(t.Role)
		}
		fmt.Fprintf(w, "%s (%s%s)\n", escape.Line(t.Address), escape.Line(sni), role)
		if len(t.SharedWith) > 0 {
			fmt.Fprintf(w, "  also for    %s (same address, name and certificate: one probe)\n", escape.Line(strings.Join(t.SharedWith, ", ")))
		}
		switch t.Status {
		case StatusNotProbed:
			fmt.Fprintf(w, "  NOT PROBED  %s\n", escape.Line(t.Error))
			continue
		case StatusUnreachable, StatusClosed:
			fmt.Fprintf(w, "  %-11s after %.0f ms: %s (nothing else tried)\n", strings.ToUpper(string(t.Status)), t.HandshakeMS, escape.Line(t.Error))
			continue
		}
		var ps []string
		for _, v := range tlsVersions {
			p := v.name + " " + t.Protocols[v.name]
			if a := t.Alerts[v.name]; a != "" {
				p += " (" + escape.Line(a) + ")"
			}
			ps = append(ps, p)
		}
		fmt.Fprintf(w, "  protocols   %s\n", strings.Join(ps, ", "))
		if t.Error != "" {
			fmt.Fprintf(w, "  handshake   FAILED after %.0f ms: %s\n", t.HandshakeMS, escape.Line(t.Error))
			continue
		}
		fmt.Fprintf(w, "  handshake   %s %s in %.0f ms\n", t.Negotiated.Version, t.Negotiated.Cipher, t.HandshakeMS)
		s := "none sent"
		if t.Staple.Present {
			cs := t.Staple.CertStatus
			if cs == "" {
				cs = "?"
			}
			s = fmt.Sprintf("%s, certificate %s", t.Staple.Status, cs)
		}
		fmt.Fprintf(w, "  staple      %s\n", s)
		c := t.Certificate
		match := "not configured here"
		if c.MatchesConfigured != nil {
			match = map[bool]string{true: "yes", false: "NO: interception or wrong vhost"}[*c.MatchesConfigured]
		}
		fmt.Fprintf(w, "  certificate %s, expires %s, must-staple %s, matches configured: %s\n",
			escape.Line(c.Subject), c.NotAfter.Format("2006-01-02"), yes[c.MustStaple], match)
		fmt.Fprintf(w, "  chain       %s\n", escape.Line(c.Chain))
	}
	for _, r := range rep.Responders {
		switch {
		case r.NotProbed:
			fmt.Fprintf(w, "responder %s: NOT PROBED: %s\n", escape.Line(r.URL), escape.Line(r.Error))
		case r.OK:
			fmt.Fprintf(w, "responder %s: ok in %.0f ms, certificate %s\n", escape.Line(r.URL), r.LatencyMS, r.CertStatus)
		default:
			fmt.Fprintf(w, "responder %s: FAILED (%s) after %.0f ms: %s\n", escape.Line(r.URL), r.Cause, r.LatencyMS, escape.Line(r.Error))
		}
	}
}

// Handshaker handshakes with one SSL vhost: how long it took, whether a staple came.
// Remediation verifies with it before and after a change; tests replace it.
type Handshaker interface {
	Handshake(ctx context.Context, t Target) (time.Duration, bool, error)
}

// TLSHandshaker is the real Handshaker.
type TLSHandshaker struct{ Timeout time.Duration }

func (h TLSHandshaker) Handshake(ctx context.Context, t Target) (time.Duration, bool, error) {
	c, d, err := dialTLS(ctx, t.Address, &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: true}, h.Timeout)
	if err != nil {
		return d, false, err
	}
	defer c.Close()
	return d, len(c.ConnectionState().OCSPResponse) > 0, nil
}

// Handshake is one verification handshake's result.
type Handshake struct {
	Name    string
	Dur     time.Duration
	Stapled bool
	Err     error
}

// Show is the handshake's time, or "failed".
func (h Handshake) Show() string {
	if errors.Is(h.Err, context.DeadlineExceeded) {
		return fmt.Sprintf("stalled>%dms", h.Dur.Milliseconds())
	}
	if h.Err != nil {
		return "failed"
	}
	return fmt.Sprintf("%dms", h.Dur.Milliseconds())
}

// Handshakes runs h against every target, four at a time; targets that share address, SNI
// name and certificate get one handshake.
func Handshakes(ctx context.Context, h Handshaker, targets []Target) []Handshake {
	out := make([]Handshake, len(targets))
	groups := sameHandshakes(targets)
	parallel(len(groups), 4, func(i int) {
		d, st, err := h.Handshake(ctx, targets[groups[i][0]])
		for _, j := range groups[i] {
			out[j] = Handshake{Name: targets[j].Name(), Dur: d, Stapled: st, Err: err}
		}
	})
	return out
}
