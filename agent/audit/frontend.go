package audit

import (
	"context"
	"strings"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/frontend"
	"github.com/stapling-agent/stapling-agent/agent/whm"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// FrontEnd is who answers on the host's HTTPS port: frontend.Detect's answer and what the
// agent can and cannot see there.
type FrontEnd struct {
	*frontend.Frontend
	// ClientFacing: Apache itself answers visitors (or nothing says otherwise). When false,
	// Apache's failures are its backend's, and the daemon never restarts it for them.
	ClientFacing bool `json:"client_facing"`
	// Note says, for people, what the agent can see behind this front end.
	Note string `json:"note,omitempty"`
}

// NginxReport is NGINX's side when it answers on the HTTPS port: its stapling configuration
// and its error log's OCSP lines over the audit's window.
type NginxReport struct {
	Config          string   `json:"config"`
	ConfigError     string   `json:"config_error,omitempty"`
	Files           []string `json:"files"`
	SSLServers      int      `json:"ssl_servers"`
	StaplingServers int      `json:"stapling_servers"`
	ErrorLog        string   `json:"error_log"`
	LogError        string   `json:"log_error,omitempty"`
	Failures        struct {
		Total       int            `json:"total"`
		ByCause     map[string]int `json:"by_cause"`
		ByResponder map[string]int `json:"by_responder"`
		Last        *time.Time     `json:"last"`
	} `json:"failures"`
	CertificateStatus int `json:"certificate_status"`
	// Remediation says why the agent does not change NGINX's stapling.
	Remediation string `json:"remediation"`
}

// WHM is WHM's own "SSL Use Stapling" switch (sslusestapling in ea4.conf) next to what Apache
// does.
type WHM struct {
	Value       string `json:"value"` // "on", "off", "" when unset (WHM shows its default, On)
	Shown       string `json:"shown"` // what WHM displays: On, Off, unknown
	File        string `json:"file"`
	Error       string `json:"error,omitempty"`
	Differs     bool   `json:"differs"`
	Explanation string `json:"explanation,omitempty"`
}

const nginxNoRemediation = "NGINX staples asynchronously (it serves its cached response and refreshes it in the background), so a dead responder never stalls its handshakes: nothing to turn off; the staple may expire if the outage outlasts it"

// addFrontEnd finds who answers on 443 and, for NGINX, reads its stapling configuration and its
// error log's OCSP lines. It returns the front end the policy is told about ("" for Apache or
// unknown: the agent then acts as it always has).
func (r *Report) addFrontEnd(ctx context.Context, root string, now time.Time) string {
	fe, err := frontend.Detect(ctx, root, nil)
	if err != nil || fe == nil {
		fe = &frontend.Frontend{Server: frontend.ServerUnknown, Reason: "not detected: " + errString(err)}
	}
	r.FrontEnd = &FrontEnd{Frontend: fe, ClientFacing: true}
	switch fe.Server {
	case frontend.ServerApache:
		return ""
	case frontend.ServerUnknown:
		r.FrontEnd.Note = "who answers on the HTTPS port could not be told; the agent assumes Apache, as it always has"
		return ""
	case frontend.ServerNginx:
		r.FrontEnd.ClientFacing = false
		r.FrontEnd.Note = "NGINX answers on the HTTPS port and proxies to Apache: Apache's failures come only from clients reaching its backend port directly"
		r.addNginx(ctx, root, now)
	case frontend.ServerLiteSpeed:
		r.FrontEnd.ClientFacing = false
		r.FrontEnd.Note = "LiteSpeed answers on the HTTPS port: it reads Apache's config (stapling directives included) but writes its own error log, in a format the agent does not read (unconfirmed: LiteSpeed is closed source), and staples asynchronously; Apache's error_log says nothing about what visitors get"
	default:
		r.FrontEnd.ClientFacing = false
		r.FrontEnd.Note = "another server answers on the HTTPS port; the agent cannot see its stapling"
	}
	return string(fe.Server)
}

func (r *Report) addNginx(ctx context.Context, root string, now time.Time) {
	n := &NginxReport{Config: frontend.NginxConf, ErrorLog: frontend.NginxErrorLog, Files: []string{}, Remediation: nginxNoRemediation}
	n.Failures.ByCause, n.Failures.ByResponder = map[string]int{}, map[string]int{}
	r.Nginx = n
	if cfg, err := frontend.ReadNginxConfig(ctx, root, ""); err != nil {
		n.ConfigError = err.Error()
	} else {
		n.Files = cfg.Files
		for _, s := range cfg.Servers {
			if !s.SSL {
				continue
			}
			n.SSLServers++
			if s.Stapling {
				n.StaplingServers++
			}
		}
	}
	// nginx can log one failed fetch twice (1.22: "recv() failed (111: ...)" and then "OCSP
	// responder prematurely closed connection", same worker, certificate and second): one
	// attempt, counted once with the first, more specific cause.
	var last string
	_, err := frontend.ScanNginxLog(ctx, apacheconf.HostPath(root, frontend.NginxErrorLog), r.Window.Since, now.Add(time.Second), func(ev frontend.NginxEvent) {
		switch ev.Kind {
		case frontend.LogFailure:
			attempt := ev.Proc + "|" + ev.Certificate + "|" + ev.Time.Truncate(time.Second).String()
			if attempt == last {
				return
			}
			last = attempt
			n.Failures.Total++
			n.Failures.ByCause[labelText(string(ev.Cause))]++
			if ev.Responder != "" {
				n.Failures.ByResponder[labelText(ev.Responder)]++
			}
			t := ev.Time.UTC()
			n.Failures.Last = &t
		case frontend.LogCertStatus:
			n.CertificateStatus++
		}
	})
	if err != nil {
		n.LogError = err.Error()
	}
	// A tenant's PHP behind fastcgi_pass can write lines of this shape (nginx logs FastCGI
	// stderr raw): the names are bounded as the Prometheus series are, top ones and "other".
	top, other := topResponders(n.Failures.ByResponder)
	n.Failures.ByResponder = map[string]int{}
	for _, t := range top {
		n.Failures.ByResponder[t.responder] = t.n
	}
	if other > 0 {
		n.Failures.ByResponder[otherResponders] = other
	}
}

// addWHM reads WHM's switch and says, when it differs from what Apache does, which wins.
func (r *Report) addWHM(root string) {
	s := whm.Read(root)
	w := &WHM{Value: s.Value, Shown: s.Shown(), File: s.File}
	if s.Err != nil {
		w.Error = s.Err.Error()
	}
	on := 0 // vhosts' own SSLUseStapling on; our Must-Staple exemptions are ours, not theirs
	for _, o := range r.Stapling.Overrides {
		if o.Value == "on" && !strings.HasSuffix(o.File, "/"+apacheconf.ExemptFileName) {
			on++
		}
	}
	state := r.Stapling.Effective
	if state == apacheconf.StaplingMixed && on == 0 {
		state = apacheconf.StaplingOff // mixed only through our own Must-Staple exemptions
	}
	w.Differs, w.Explanation = whm.Compare(s, whm.Effective{
		State: state, GlobalAt: r.Stapling.GlobalAt, ManagedBlock: r.Stapling.ManagedBlock,
		Include: r.Layout.IncludeFile, HTTPDConf: r.Layout.HTTPDConf, VHostsOn: on,
	})
	r.WHM = w
}

func errString(err error) string {
	if err == nil {
		return "no answer"
	}
	return err.Error()
}
