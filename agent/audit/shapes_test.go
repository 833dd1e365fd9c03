package audit

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/internal/fakehost"
)

// shapesFixture is a fake EA4 host whose httpd.conf has every vhost shape of fakehost.Shapes
// (IPv6 and dual-stack, `*:443`, wildcard subdomains and aliases, cPanel's own per-vhost `SSLUseStapling off`, the proxy-subdomain vhost), with errorLog.
func shapesFixture(t *testing.T, mustStaple bool, errorLog string) ([]fakehost.Shape, *Report) {
	t.Helper()
	shapes := fakehost.Shapes(mustStaple)
	files := fakehost.ShapesFiles(t, shapes)
	files[fakehost.EA4Log] = errorLog
	h := fakehost.New(t, "ea4", files)
	h.Set(auditNow)
	return shapes, runAudit(h.Env(t, nil))
}

// The audit names each shape's vhost as httpd.conf does, lists the Must-Staple wildcard vhost,
// and counts cPanel's own per-vhost `SSLUseStapling off` (written `off` in account vhosts and
// `Off` in the proxy-subdomain vhost) instead of listing them.
func TestAuditCPanelShapes(t *testing.T) {
	shapes, r := shapesFixture(t, true, "")
	if r.Stapling.Effective != "on" {
		t.Fatalf("effective %s: %s", r.Stapling.Effective, r.Summary)
	}
	var wantOff, gotOff []string
	for _, s := range shapes {
		if s.CPanelOff {
			wantOff = append(wantOff, s.ServerName)
		}
	}
	for _, o := range r.Stapling.Overrides {
		if !strings.EqualFold(o.Value, "off") {
			t.Errorf("override %+v: only cPanel's offs are in this config", o)
		}
		gotOff = append(gotOff, o.VHost)
	}
	sort.Strings(wantOff)
	sort.Strings(gotOff)
	if !slices.Equal(gotOff, wantOff) {
		t.Fatalf("per-vhost offs %v, want %v", gotOff, wantOff)
	}
	if len(r.Stapling.MustStaple) != 1 || r.Stapling.MustStaple[0].VHost != "star.example" {
		t.Fatalf("must_staple %+v, want the star.example vhost", r.Stapling.MustStaple)
	}

	var text bytes.Buffer
	if err := Render(&text, r, "text"); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	if want := fmt.Sprintf("  %d vhosts set SSLUseStapling off themselves", len(wantOff)); !strings.Contains(out, want) {
		t.Errorf("text report lacks %q:\n%s", want, out)
	}
	for _, name := range wantOff {
		if strings.Contains(out, "vhost "+name+" sets") {
			t.Errorf("text report lists cPanel's off in %s one by one:\n%s", name, out)
		}
	}
}

// ipv6Outage is n failed renewals for responder, as mod_ssl logs them while the handshake that
// triggered each came over IPv6: Apache prints an IPv6 client without brackets,
// `[client 2001:db8::20:51234]`.
func ipv6Outage(n int, ago time.Duration, responder string) string {
	var sb strings.Builder
	for i := n - 1; i >= 0; i-- {
		at := ago + time.Duration(i)*time.Minute
		fmt.Fprintf(&sb, "[%s] [ssl:error] [pid %d] (111)Connection refused: [client 2001:db8::20:%d] AH01974: could not connect to OCSP responder '%s'\n", logStamp(at), 300+i, 51234+i, responder)
		fmt.Fprintf(&sb, "[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", logStamp(at-time.Millisecond), 300+i)
	}
	return sb.String()
}

// Failures are attributed to the vhosts and accounts whose certificates name the responder,
// whatever the vhosts' shapes: the wildcard subdomain's own responder down affects that vhost
// and its account only (scoped out); the shared responder down affects the plain, the IPv6,
// the dual-stack and the `*:443` vhosts, and the server's own (no account).
func TestAuditAttributesShapesFailures(t *testing.T) {
	cases := []struct {
		name, responder string
		down            string
		vhosts          []string
		accounts        []string
		kinds           []string
	}{
		{"wildcard subdomain's responder", "ocsp.wild.example", fakehost.ResponderWild,
			[]string{"_wildcard_.wild.example"}, []string{"wild"}, []string{"scoped_out"}},
		{"shared responder", "ocsp.example.net", fakehost.Responder,
			[]string{"a.example", "star.example", "v6.example", "v6only.example"}, []string{"(no account)", "alice", "sixer"}, []string{"remediate", "dry_run"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			asker := &fakehost.Asker{Down: map[string]bool{c.down: true}}
			shapes := fakehost.Shapes(false)
			files := fakehost.ShapesFiles(t, shapes)
			files[fakehost.EA4Log] = ipv6Outage(4, 5*time.Minute, c.responder)
			h := fakehost.New(t, "ea4", files)
			h.Set(auditNow)
			o := opts
			o.Ask = asker.Ask
			r := Run(t.Context(), h.Env(t, nil), o)
			if r.Failures.Total != 4 || r.Failures.ByResponder[c.responder] != 4 || r.Failures.ByCause["connect_refused"] != 4 {
				t.Fatalf("failures %+v (IPv6 client addresses in the transport lines)", r.Failures)
			}
			d := r.Policy.Decision
			if !slices.Contains(c.kinds, string(d.Kind)) || d.Affected == nil {
				t.Fatalf("decision %+v", d)
			}
			got := slices.Clone(d.Affected.VHosts)
			sort.Strings(got)
			if !slices.Equal(got, c.vhosts) || !slices.Equal(d.Affected.Accounts, c.accounts) || d.Affected.SSLVHosts != len(shapes) {
				t.Fatalf("affected %+v, want vhosts %v accounts %v of %d SSL vhosts", d.Affected, c.vhosts, c.accounts, len(shapes))
			}
		})
	}
}
