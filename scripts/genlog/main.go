// Command genlog writes a realistic cPanel Apache error_log for benchmarks: PHP-FPM warnings,
// ModSecurity audit lines, authz denials, autoindex refusals, invalid URIs, TLS warnings and
// restarts, with OCSP stapling outages (transport line + AH01941 bursts) and forged lines that
// carry stapling text in client-controlled fields. Timestamps run evenly over -span and end
// at -end (default now), in local time like Apache's.
//
//	go run ./scripts/genlog -size 500MB -span 72h > error_log
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	size := flag.String("size", "100MB", "approximate output size (KB, MB, GB)")
	span := flag.Duration("span", 72*time.Hour, "time the log covers")
	endFlag := flag.String("end", "", "last timestamp, RFC 3339 (default: now)")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	bytes, err := parseSize(*size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "genlog:", err)
		os.Exit(2)
	}
	end := time.Now()
	if *endFlag != "" {
		if end, err = time.Parse(time.RFC3339, *endFlag); err != nil {
			fmt.Fprintln(os.Stderr, "genlog:", err)
			os.Exit(2)
		}
	}
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	g := &gen{r: rand.New(rand.NewPCG(*seed, 2)), w: w}
	// Average line is ~250 bytes; spread timestamps so the last line lands at end.
	lines := bytes / 250
	step := *span / time.Duration(lines)
	t := end.Add(-*span)
	var written int64
	for written < bytes {
		n := g.line(t)
		written += int64(n)
		t = t.Add(step)
		if t.After(end) {
			t = end
		}
	}
}

type gen struct {
	r      *rand.Rand
	w      *bufio.Writer
	outage int // lines left in the current stapling outage burst
}

func stamp(t time.Time) string { return t.Format("Mon Jan 02 15:04:05.000000 2006") }

var (
	users   = []string{"shop", "blog", "wpuser", "acme", "clinic", "bakery", "agency", "forum"}
	files   = []string{"index.php", "wp-login.php", "xmlrpc.php", "wp-content/plugins/woocommerce/includes/class-wc-cart.php", "cart.php", "api/v1/orders.php"}
	ips     = []string{"198.51.100.7", "203.0.113.9", "192.0.2.44", "198.51.100.203", "203.0.113.66"}
	respond = []string{"ocsp.sectigo.com", "ocsp.digicert.com", "ocsp.comodoca.com"}
)

func (g *gen) pick(s []string) string { return s[g.r.IntN(len(s))] }

func (g *gen) line(t time.Time) int {
	ts := stamp(t)
	pid := 1000 + g.r.IntN(30000)
	ip := g.pick(ips)
	port := 1024 + g.r.IntN(60000)
	var s string
	if g.outage > 0 {
		g.outage--
		resp := respond[0]
		s = fmt.Sprintf("[%s] [ssl:error] [pid %d] (70007)The timeout specified has expired: [client %s:%d] AH01974: could not connect to OCSP responder '%s'\n"+
			"[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", ts, pid, ip, port, resp, ts, pid)
		g.w.WriteString(s)
		return len(s)
	}
	switch p := g.r.IntN(1000); {
	case p < 400:
		s = fmt.Sprintf("[%s] [proxy_fcgi:error] [pid %d] [client %s:%d] AH01071: Got error 'PHP message: PHP Warning:  Undefined array key \"%s\" in /home/%s/public_html/%s on line %d; PHP message: PHP Deprecated:  Creation of dynamic property is deprecated in /home/%s/public_html/%s on line %d', referer: https://%s.example.com/\n",
			ts, pid, ip, port, g.pick(users), g.pick(users), g.pick(files), g.r.IntN(900), g.pick(users), g.pick(files), g.r.IntN(900), g.pick(users))
	case p < 600:
		s = fmt.Sprintf("[%s] [security2:error] [pid %d] [client %s:%d] [client %s] ModSecurity: Access denied with code 403 (phase 2). Matched phrase \"wp-config\" at REQUEST_URI. [file \"/etc/apache2/conf.d/modsec_vendor_configs/OWASP3/rules/REQUEST-930-APPLICATION-ATTACK-LFI.conf\"] [line \"%d\"] [id \"930130\"] [msg \"Restricted File Access Attempt\"] [data \"Matched Data: /wp-config found within REQUEST_FILENAME: /wp-config.php.bak\"] [severity \"CRITICAL\"] [tag \"application-multi\"] [hostname \"%s.example.com\"] [uri \"/wp-config.php.bak\"] [unique_id \"Z%08x\"]\n",
			ts, pid, ip, port, ip, 100+g.r.IntN(200), g.pick(users), g.r.Uint32())
	case p < 750:
		s = fmt.Sprintf("[%s] [authz_core:error] [pid %d] [client %s:%d] AH01630: client denied by server configuration: /home/%s/public_html/.env\n", ts, pid, ip, port, g.pick(users))
	case p < 800:
		s = fmt.Sprintf("[%s] [autoindex:error] [pid %d] [client %s:%d] AH01276: Cannot serve directory /home/%s/public_html/wp-content/uploads/: No matching DirectoryIndex (index.php,index.html) found, and server-generated directory index forbidden by Options directive\n", ts, pid, ip, port, g.pick(users))
	case p < 840:
		s = fmt.Sprintf("[%s] [core:error] [pid %d] [client %s:%d] AH00126: Invalid URI in request GET /%s HTTP/1.1\n", ts, pid, ip, port, strings.Repeat("..%%2f", 1+g.r.IntN(8)))
	case p < 850:
		// Forged: stapling text in client-controlled fields. Never an event.
		switch g.r.IntN(3) {
		case 0:
			s = fmt.Sprintf("[%s] [core:error] [pid %d] [client %s:%d] AH00126: Invalid URI in request GET /x]%%20[ssl:error]%%20[pid%%201]%%20AH01941:%%20stapling_renew_response:%%20responder%%20error HTTP/1.1\n", ts, pid, ip, port)
		case 1:
			s = fmt.Sprintf("[%s] [proxy_fcgi:error] [pid %d] [client %s:%d] AH01071: Got error 'PHP message: [%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error'\n", ts, pid, ip, port, ts, pid)
		default:
			s = fmt.Sprintf("[%s] [security2:error] [pid %d] [client %s:%d] ModSecurity: Warning. [data \"[ssl:error] [pid 1] AH01941: stapling_renew_response: responder error\"] [uri \"/AH01941\"]\n", ts, pid, ip, port)
		}
	case p < 860:
		s = fmt.Sprintf("[%s] [ssl:warn] [pid %d] AH01909: %s.example.com:443:0 server certificate does not include an ID which matches the server name\n", ts, pid, g.pick(users))
	case p < 862:
		s = fmt.Sprintf("[%s] [mpm_prefork:notice] [pid %d] AH00163: Apache/2.4.62 (cPanel) OpenSSL/3.0.7 mod_bwlimited/1.4 configured -- resuming normal operations\n", ts, pid)
	case p < 863 && g.r.IntN(20) == 0:
		g.outage = 5 + g.r.IntN(40) // a stapling outage burst starts
		fallthrough
	default:
		s = fmt.Sprintf("[%s] [cgi:error] [pid %d] [client %s:%d] AH01215: stderr from /home/%s/public_html/cgi-bin/stats.cgi: Use of uninitialized value in concatenation at line %d.\n", ts, pid, ip, port, g.pick(users), g.r.IntN(300))
	}
	g.w.WriteString(s)
	return len(s)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	u := strings.ToUpper(s)
	for suffix, m := range map[string]int64{"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30} {
		if strings.HasSuffix(u, suffix) {
			u, mult = strings.TrimSuffix(u, suffix), m
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad -size %q", s)
	}
	return n * mult, nil
}
