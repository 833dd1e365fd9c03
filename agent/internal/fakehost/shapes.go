package fakehost

import (
	"fmt"
	"strings"
	"testing"
)

// Shape is one SSL vhost of the Shapes host, and what every reader of vhosts should make of
// it.
type Shape struct {
	Addrs      []string // the <VirtualHost> line's addresses, in cPanel's order
	ServerName string   // as written in httpd.conf
	Aliases    []string
	Account    string // the SuexecUserGroup user; "" for the server's own vhosts
	CertFile   string // host path of the combined certificate file
	CertName   string // the certificate's CN and SAN
	OCSP       string // the certificate's OCSP URL; "" for none
	MustStaple bool
	// CPanelOff: cPanel wrote `SSLUseStapling off` into the vhost, as its template does for a
	// certificate without an OCSP URL (ssl_vhost.default: `IF supported.stapling &&
	// !has_ocsp(vhost.sslcertificatefile)`).
	CPanelOff bool
	// SNI is the name a probe should send to reach this vhost as a client does; Address the
	// address it should connect to (see probe.Targets).
	SNI, Address string
}

// ResponderWild is the OCSP URL of the wildcard subdomain's certificate alone, so a test can
// take it down and see which vhosts and accounts depend on it.
const ResponderWild = "http://ocsp.wild.example/"

// ShapesHost is the server's hostname on the Shapes host (the proxy-subdomain vhost's
// ServerName).
const ShapesHost = "host.example"

// Shapes are the SSL vhosts of the Shapes host. The addresses are documentation ones
// (RFC 5737, RFC 3849): nothing here is ever dialled.
//
//   - a.example: an account on a shared IPv4 address (CertFile, Responder).
//   - v6.example: an account with a dedicated IPv6 address: cPanel puts both addresses in one
//     vhost, `<VirtualHost [2001:db8::10]:443 192.0.2.10:443>` (ssl_vhost.default writes
//     `ip:port` for each of vhost.ips; an IPv6 address is bracketed, as Apache requires).
//   - v6only.example: the same account's addon domain on its IPv6 address alone.
//   - _wildcard_.wild.example: a wildcard subdomain (`*.wild.example`) as today's cPanel
//     writes it: the ServerName through wildcard_safe() (Cpanel::WildcardDomain
//     encode_wildcard_domain: `*.` becomes `_wildcard_.`), the pattern in ServerAlias, where
//     Apache matches patterns; its certificate names ResponderWild.
//   - wildcard_safe.old.example: the same, rendered by an older cPanel (the legacy
//     `wildcard_safe.` prefix, still used for the userdata include path); its certificate has
//     no OCSP URL, so cPanel wrote `SSLUseStapling off`.
//   - star.example: an admin's own vhost on `*:443` (an address wildcard) with
//     `ServerAlias *.star.example`; its certificate is Must-Staple when mustStaple. (A pattern
//     as ServerName is no shape: Apache refuses `ServerName *.star.example`, "Invalid
//     ServerName ... use ServerAlias".)
//   - noocsp.example: the dual-stack account's other domain, AutoSSL-style certificate
//     without an OCSP URL: cPanel's `SSLUseStapling off`.
//   - host.example: cPanel's proxy-subdomain vhost (ea4_main.default): every address in use
//     plus 127.0.0.1, `ServerAlias cpanel.* whm.* webmail.* webdisk.*` (suffix patterns),
//     SSL inside `<IfModule mod_ssl.c>`, the service certificate without an OCSP URL and
//     cPanel's `SSLUseStapling Off`.
func Shapes(mustStaple bool) []Shape {
	tls := func(name string) string { return "/var/cpanel/ssl/apache_tls/" + name + "/combined" }
	return []Shape{
		{Addrs: []string{"192.0.2.10:443"}, ServerName: "a.example", Aliases: []string{"www.a.example"}, Account: "alice",
			CertFile: CertFile, CertName: "a.example", OCSP: Responder, SNI: "a.example", Address: "192.0.2.10:443"},
		{Addrs: []string{"[2001:db8::10]:443", "192.0.2.10:443"}, ServerName: "v6.example", Aliases: []string{"www.v6.example"}, Account: "sixer",
			CertFile: tls("v6.example"), CertName: "v6.example", OCSP: Responder, SNI: "v6.example", Address: "[2001:db8::10]:443"},
		{Addrs: []string{"[2001:db8::10]:443"}, ServerName: "v6only.example", Aliases: []string{"www.v6only.example"}, Account: "sixer",
			CertFile: tls("v6only.example"), CertName: "v6only.example", OCSP: Responder, SNI: "v6only.example", Address: "[2001:db8::10]:443"},
		{Addrs: []string{"192.0.2.10:443"}, ServerName: "_wildcard_.wild.example", Aliases: []string{"*.wild.example"}, Account: "wild",
			CertFile: tls("_wildcard_.wild.example"), CertName: "*.wild.example", OCSP: ResponderWild,
			SNI: "_wildcard_.wild.example", Address: "192.0.2.10:443"},
		{Addrs: []string{"192.0.2.10:443"}, ServerName: "wildcard_safe.old.example", Aliases: []string{"*.old.example"}, Account: "wild",
			CertFile: tls("_wildcard_.old.example"), CertName: "*.old.example", CPanelOff: true,
			SNI: "wildcard_safe.old.example", Address: "192.0.2.10:443"},
		{Addrs: []string{"*:443"}, ServerName: "star.example", Aliases: []string{"*.star.example"},
			CertFile: "/etc/apache2/ssl/star.example.combined", CertName: "*.star.example", OCSP: Responder, MustStaple: mustStaple,
			SNI: "star.example", Address: "127.0.0.1:443"},
		{Addrs: []string{"[2001:db8::10]:443", "192.0.2.10:443"}, ServerName: "noocsp.example", Aliases: []string{"www.noocsp.example"}, Account: "sixer",
			CertFile: tls("noocsp.example"), CertName: "noocsp.example", CPanelOff: true, SNI: "noocsp.example", Address: "[2001:db8::10]:443"},
		{Addrs: []string{"192.0.2.10:443", "[2001:db8::10]:443", "127.0.0.1:443"}, ServerName: ShapesHost,
			Aliases:  []string{"cpanel.*", "whm.*", "webmail.*", "webdisk.*"},
			CertFile: "/var/cpanel/ssl/cpanel/mycpanel.pem", CertName: ShapesHost, CPanelOff: true, SNI: ShapesHost, Address: "192.0.2.10:443"},
	}
}

// ShapesHTTPD is an httpd.conf in the shape cPanel's EA4 template renders (ea4_main.default,
// ssl_vhost.default, vhost.default in CpanelInc/ea-apache2-config), trimmed to what the agent
// reads, holding the vhosts of shapes: the global SSL block in <IfModule socache_shmcb_module>,
// the include order of FACTS.md section 4, the default vhost `<VirtualHost *>` for unbound
// IPs, a plain vhost per account domain, then the SSL vhosts, the proxy-subdomain vhost last.
func ShapesHTTPD(shapes []Shape) string {
	var b strings.Builder
	b.WriteString(LoadModules + `Include "/etc/apache2/conf.d/includes/pre_main_global.conf"
ServerName ` + ShapesHost + `
<IfModule ssl_module>
    <IfModule socache_shmcb_module>
        SSLUseStapling on
        SSLStaplingCache shmcb:/run/apache2/stapling_cache_shmcb(256000)
    </IfModule>
    Listen 0.0.0.0:443
    Listen [::]:443
</IfModule>
Include "/etc/apache2/conf.d/*.conf"
Include "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"

<VirtualHost *>
    # Default vhost for unbound IPs
    ServerName ` + ShapesHost + `
    DocumentRoot /var/www/html
</VirtualHost>

# BEGIN: HTTP vhosts list
`)
	for _, s := range shapes {
		if s.Account == "" {
			continue
		}
		var plain []string
		for _, a := range s.Addrs {
			plain = append(plain, strings.TrimSuffix(a, ":443")+":80")
		}
		fmt.Fprintf(&b, "<VirtualHost %s>\n  ServerName %s\n  ServerAlias %s\n  DocumentRoot /home/%s/public_html\n  <IfModule suexec_module>\n    <IfModule !mod_ruid2.c>\n      SuexecUserGroup %s %s\n    </IfModule>\n  </IfModule>\n</VirtualHost>\n",
			strings.Join(plain, " "), s.ServerName, strings.Join(s.Aliases, " "), s.Account, s.Account, s.Account)
	}
	b.WriteString("# END: HTTP vhosts list\n\n# BEGIN: HTTPS vhosts list\n")
	for _, s := range shapes {
		if s.ServerName == ShapesHost {
			continue
		}
		fmt.Fprintf(&b, "<VirtualHost %s>\n  ServerName %s\n", strings.Join(s.Addrs, " "), s.ServerName)
		for _, a := range s.Aliases {
			fmt.Fprintf(&b, "  ServerAlias %s\n", a)
		}
		docroot := "/var/www/html"
		if s.Account != "" {
			docroot = "/home/" + s.Account + "/public_html"
		}
		fmt.Fprintf(&b, "  DocumentRoot %s\n  UseCanonicalName Off\n", docroot)
		if s.Account != "" {
			fmt.Fprintf(&b, "  ## User %s # Needed for Cpanel::ApacheConf\n  <IfModule suexec_module>\n    <IfModule !mod_ruid2.c>\n      SuexecUserGroup %s %s\n    </IfModule>\n  </IfModule>\n", s.Account, s.Account, s.Account)
		}
		fmt.Fprintf(&b, "  <IfModule ssl_module>\n    SSLEngine on\n    SSLCertificateFile %s\n", s.CertFile)
		if s.CPanelOff {
			b.WriteString("    SSLUseStapling off\n")
		}
		b.WriteString("  </IfModule>\n")
		if s.Account != "" {
			// The include path uses the legacy wildcard encoding (Cpanel::WildcardDomain:
			// encode_legacy_wildcard_domain is "only for the custom vhost include path").
			fmt.Fprintf(&b, "  IncludeOptional \"/etc/apache2/conf.d/userdata/ssl/2_4/%s/%s/*.conf\"\n", s.Account, legacyWildcard(s.Aliases, s.ServerName))
		}
		b.WriteString("</VirtualHost>\n")
	}
	b.WriteString("# END: HTTPS vhosts list\n\n")
	for _, s := range shapes {
		if s.ServerName != ShapesHost {
			continue
		}
		fmt.Fprintf(&b, "# CPANEL/WHM/WEBMAIL/WEBDISK PROXY SUBDOMAINS\n<VirtualHost %s>\n    ServerName %s\n    ServerAlias %s\n    DocumentRoot /var/www/html\n",
			strings.Join(s.Addrs, " "), s.ServerName, strings.Join(s.Aliases, " "))
		fmt.Fprintf(&b, "    <IfModule mod_ssl.c>\n        SSLEngine on\n        SSLCertificateFile %s\n        SSLCertificateKeyFile %s\n        SSLCertificateChainFile %s\n        SSLUseStapling Off\n    </IfModule>\n    UseCanonicalName Off\n</VirtualHost>\n",
			s.CertFile, s.CertFile, s.CertFile)
	}
	b.WriteString("Include \"/etc/apache2/conf.d/includes/post_virtualhost_global.conf\"\n")
	return b.String()
}

// legacyWildcard is the domain part of a vhost's userdata include path: a wildcard subdomain's
// `*.` (from its ServerAlias) as `wildcard_safe.`, else the ServerName.
func legacyWildcard(aliases []string, serverName string) string {
	for _, a := range aliases {
		if rest, ok := strings.CutPrefix(a, "*."); ok && strings.HasSuffix(serverName, "."+rest) {
			return "wildcard_safe." + rest
		}
	}
	return serverName
}

// ShapesFiles are the files of a fake EA4 host (for New) with ShapesHTTPD over shapes, each
// vhost's certificate, and empty admin includes.
func ShapesFiles(t testing.TB, shapes []Shape) map[string]string {
	t.Helper()
	files := map[string]string{
		EA4HTTPD: ShapesHTTPD(shapes),
		"/etc/apache2/conf.d/includes/pre_main_global.conf":         "",
		"/etc/apache2/conf.d/includes/post_virtualhost_global.conf": "",
		EA4Include: "# Pre VirtualHost Include\n",
		EA4Log:     "",
	}
	for _, s := range shapes {
		files[s.CertFile] = Cert(t, s.CertName, s.OCSP, s.MustStaple)
	}
	return files
}
