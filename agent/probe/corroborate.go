package probe

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

// AddressResult is one resolved address of a responder (or of the proxy), asked on its own.
type AddressResult struct {
	Address string
	OK      bool
	Cause   string // the audit's cause vocabulary, when not OK
	Error   string
}

// ResponderCheck is what Check found: Answers when some address gave a correct OCSP response
// (mod_ssl tries every address in turn, so one good address is enough for it to staple).
type ResponderCheck struct {
	URL       string
	Answers   bool
	Addresses []AddressResult
	Note      string // e.g. how it was asked without the issuer
}

// Detail is the per-address outcome in words, for the decision's log line and the journal.
func (c ResponderCheck) Detail() string {
	var parts []string
	for _, a := range c.Addresses {
		if a.OK {
			parts = append(parts, a.Address+" ok")
		} else {
			parts = append(parts, fmt.Sprintf("%s %s", a.Address, a.Cause))
		}
	}
	if c.Note != "" {
		parts = append(parts, c.Note)
	}
	return strings.Join(parts, ", ")
}

// Resolver resolves a host to its addresses; tests replace it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Check asks the responder at rawURL about cf from this host the way mod_ssl does
// (ssl_util_ocsp.c, FACTS.md section 11): the host is resolved (A and AAAA), then every address
// is tried on its own (not raced, as Go's dialer would) with mod_ssl's responder timeout, with a
// real OCSP request for a served certificate over plain HTTP; through the proxy when proxy
// (SSLOCSPProxyURL) is set, whose addresses are then the ones tried. The addresses are asked
// concurrently, so the whole check takes about one timeout. Without the issuer no OCSP
// request can be built: then any HTTP answer counts as the responder answering.
func Check(ctx context.Context, res Resolver, rawURL string, cf *CertFile, timeout time.Duration, proxy string) ResponderCheck {
	c := ResponderCheck{URL: rawURL}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		c.Addresses = []AddressResult{{Address: rawURL, Cause: "unspecified", Error: "not an http:// OCSP URL"}}
		return c
	}
	target := u
	var proxyURL *url.URL
	if proxy != "" {
		if proxyURL, err = url.Parse(proxy); err != nil || proxyURL.Host == "" {
			c.Addresses = []AddressResult{{Address: proxy, Cause: "unspecified", Error: "bad SSLOCSPProxyURL"}}
			return c
		}
		target = proxyURL
	}
	host, port := target.Hostname(), target.Port()
	if port == "" {
		port = "80"
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	ips, err := res.LookupIPAddr(rctx, host)
	cancel()
	if err != nil || len(ips) == 0 {
		if err == nil {
			err = errors.New("no address")
		}
		c.Addresses = []AddressResult{{Address: host, Cause: "dns", Error: err.Error()}}
		return c
	}
	var body []byte
	if cf != nil && cf.Issuer != nil {
		body, err = ocsp.CreateRequest(cf.Leaf, cf.Issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
		if err != nil {
			body = nil
		}
	}
	if body == nil {
		c.Note = "no issuer certificate to build an OCSP request: any HTTP answer counts"
	}
	c.Addresses = make([]AddressResult, len(ips))
	var wg sync.WaitGroup
	for i, ip := range ips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Addresses[i] = askAddress(ctx, u, proxyURL, net.JoinHostPort(ip.String(), port), body, cf, timeout)
		}()
	}
	wg.Wait()
	sort.SliceStable(c.Addresses, func(i, j int) bool { return c.Addresses[i].Address < c.Addresses[j].Address })
	for _, a := range c.Addresses {
		c.Answers = c.Answers || a.OK
	}
	return c
}

// askAddress sends the request to one address, with the whole exchange bounded by timeout
// (mod_ssl applies SSLStaplingResponderTimeout to the connect and to each read).
func askAddress(ctx context.Context, u, proxy *url.URL, addr string, body []byte, cf *CertFile, timeout time.Duration) AddressResult {
	r := AddressResult{Address: addr}
	fail := func(cause, msg string) AddressResult { r.Cause, r.Error = cause, msg; return r }
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{
		// Every address on its own: the dial ignores what net/http would resolve.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
		},
		ResponseHeaderTimeout: timeout,
		DisableKeepAlives:     true,
	}
	if proxy != nil {
		tr.Proxy = http.ProxyURL(proxy)
	}
	defer tr.CloseIdleConnections()
	payload := body
	if payload == nil {
		payload = []byte{}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(payload))
	if err != nil {
		return fail("unspecified", err.Error())
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fail(string(netCause(err)), err.Error())
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail(string(netCause(err)), err.Error())
	}
	if body == nil {
		r.OK = true // an HTTP answer: reachable (see Check)
		return r
	}
	if resp.StatusCode != http.StatusOK {
		return fail("http_status", "HTTP "+resp.Status)
	}
	if _, err := VerifyOCSP(data, cf.Leaf, cf.Issuer); err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			return fail("http_status", "OCSP "+re.Status.String())
		}
		return fail("decode_error", err.Error())
	}
	r.OK = true
	return r
}
