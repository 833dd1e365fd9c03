// Package fakehost builds fake cPanel hosts for tests, the way node_exporter's tests build a
// fake sysfs: a real directory tree in t.TempDir() laid out like EA4 or EA3, a recording
// stand-in for the command runner, and an env.Env over both with a settable clock. The CLI
// and end-to-end tests run the real binary and the real Apache instead.
package fakehost

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stapling-agent/stapling-agent/agent/config"
	"github.com/stapling-agent/stapling-agent/agent/env"
	"github.com/stapling-agent/stapling-agent/agent/probe"
	"github.com/stapling-agent/stapling-agent/agent/state"
	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// Host paths and contents the tests share.
const (
	EA4Include = "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"
	EA4HTTPD   = "/etc/apache2/conf/httpd.conf"
	EA4Log     = "/var/log/apache2/error_log"
	AdminBytes = "# admin's include\r\nKeepAliveTimeout 5" // CRLF, no final newline
	WiredHTTPD = LoadModules + "SSLUseStapling On\nSSLStaplingCache shmcb:/run/apache2/stapling(256000)\n" +
		"Include \"/etc/apache2/conf.d/includes/pre_virtualhost_global.conf\"\n" +
		"<VirtualHost *:443>\nServerName a.example\nSSLEngine on\nSSLCertificateFile " + CertFile + "\n</VirtualHost>\n"
	// LoadModules are the LoadModule lines every Apache config with SSL has (cPanel's are in
	// conf.modules.d): <IfModule ssl_module> holds only when one loads mod_ssl.
	LoadModules = "LoadModule ssl_module modules/mod_ssl.so\nLoadModule socache_shmcb_module modules/mod_socache_shmcb.so\n"
	// CertFile is a.example's combined certificate file (leaf and issuer), written on every
	// fake EA4 host; its OCSP URL is Responder.
	CertFile  = "/etc/apache2/ssl/a.example.combined"
	Responder = "http://ocsp.example.net/"
)

// Runner records commands and answers from a script of errors per command name (argv[0]).
// It is safe for concurrent use (the daemon's worker runs commands).
type Runner struct {
	mu    sync.Mutex
	calls [][]string
	Errs  map[string][]error
	Hook  map[string]func()
}

func (f *Runner) Run(_ context.Context, argv []string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, argv)
	name := argv[0]
	h := f.Hook[name]
	var err error
	if q := f.Errs[name]; len(q) > 0 {
		f.Errs[name], err = q[1:], q[0]
	}
	f.mu.Unlock()
	if h != nil {
		h()
	}
	if err != nil {
		out := []byte("AH00526: Syntax error")
		return out, &apacheconf.CmdError{Argv: argv, Output: out, Err: err}
	}
	return nil, nil
}

// Names are the commands run so far, comma-separated.
func (f *Runner) Names() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n []string
	for _, c := range f.calls {
		n = append(n, c[0])
	}
	return strings.Join(n, ",")
}

// Reset forgets the commands run so far.
func (f *Runner) Reset() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

// Host is a fake cPanel host.
type Host struct {
	Root   string
	Layout *apacheconf.Layout
	Runner *Runner
	Out    *bytes.Buffer
	mu     sync.Mutex
	clock  time.Time
}

// New builds a fake EA4 host (or EA3 with kind "ea3") in a temp dir with files (host path:
// content). The include's directory always exists; EA4's logs directory is a relative symlink.
func New(t testing.TB, kind string, files map[string]string) *Host {
	t.Helper()
	root := t.TempDir()
	all := map[string]string{}
	for p, c := range files {
		all[p] = c
	}
	if kind == "ea4" {
		all["/etc/cpanel/ea4/is_ea4"] = ""
		if _, ok := all[CertFile]; !ok {
			all[CertFile] = Cert(t, "a.example", Responder, false)
		}
	}
	for p, content := range all {
		Write(t, root, p, content)
	}
	if kind == "ea4" {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(EA4Include)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, "var/log/apache2"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../var/log/apache2", filepath.Join(root, "etc/apache2/logs")); err != nil {
			t.Fatal(err)
		}
	}
	l, err := apacheconf.Detect(root)
	if err != nil {
		t.Fatal(err)
	}
	return &Host{Root: root, Layout: l, Runner: &Runner{Errs: map[string][]error{}, Hook: map[string]func(){}}, Out: &bytes.Buffer{},
		clock: time.Now().Truncate(time.Second)}
}

// Write creates a host file under root.
func Write(t testing.TB, root, hostPath, content string) {
	t.Helper()
	full := filepath.Join(root, hostPath)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Read returns a host file's content.
func (h *Host) Read(t testing.TB, hostPath string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.Root, hostPath))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Now is the host's clock; Advance moves it.
func (h *Host) Now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clock
}

// Advance moves the clock by d.
func (h *Host) Advance(d time.Duration) {
	h.mu.Lock()
	h.clock = h.clock.Add(d)
	h.mu.Unlock()
}

// Set sets the clock.
func (h *Host) Set(t time.Time) {
	h.mu.Lock()
	h.clock = t
	h.mu.Unlock()
}

// Env is the environment commands get on this host: built-in configuration changed by
// mutate, a silent logger, the recording runner, the state directory under the root, the
// host's clock. Commands are the stand-ins "configtest", "restart" and "rebuild" (none on EA3).
func (h *Host) Env(t testing.TB, mutate func(*config.Config)) *env.Env {
	t.Helper()
	cfg, err := config.Load(config.NewViper(), filepath.Join(h.Root, "absent.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Commands.ConfigTest, cfg.Commands.Restart = []string{"configtest"}, []string{"restart"}
	if h.Layout.Kind == apacheconf.KindEA4 {
		cfg.Commands.Rebuild = []string{"rebuild"}
	}
	if mutate != nil {
		mutate(cfg)
	}
	return &env.Env{
		Root: h.Root, Config: cfg, Log: zerolog.Nop(), Layout: h.Layout, Runner: h.Runner,
		State: state.New(filepath.Join(h.Root, cfg.StateDir), h.Now), Now: h.Now,
	}
}

// Cert is a combined certificate file (leaf, then its issuer) for name whose OCSP URL is
// ocspURL (none when ocspURL is "", as in Let's Encrypt certificates since 2025-05-07),
// Must-Staple (TLS Feature status_request) when mustStaple. A wildcard name ("*.example")
// is the certificate's CN and SAN as a CA writes it.
func Cert(t testing.TB, name, ocspURL string, mustStaple bool) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fakehost CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	if ocspURL != "" {
		leaf.OCSPServer = []string{ocspURL}
	}
	if mustStaple {
		feature, _ := asn1.Marshal([]int{5})
		leaf.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}, Value: feature}}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
}

// Asker answers corroborating requests like the responders would: every URL answers but the
// ones in down. It records the URLs asked.
type Asker struct {
	mu    sync.Mutex
	Down  map[string]bool
	asked []string
}

// Ask has remediate.Asker's signature.
func (a *Asker) Ask(_ context.Context, rawURL string, _ *probe.CertFile, _ time.Duration, _ string) probe.ResponderCheck {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, rawURL)
	if a.Down[rawURL] {
		return probe.ResponderCheck{URL: rawURL, Addresses: []probe.AddressResult{{Address: "192.0.2.1:80", Cause: "connect_refused"}}}
	}
	return probe.ResponderCheck{URL: rawURL, Answers: true, Addresses: []probe.AddressResult{{Address: "192.0.2.1:80", OK: true}}}
}

// Asked is how many requests were made.
func (a *Asker) Asked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.asked)
}

// Stamp formats t as Apache's error_log does.
func Stamp(t time.Time) string { return t.Format("Mon Jan 02 15:04:05.000000 2006") }

// Failure is one failed renewal as mod_ssl logs it: the transport line and AH01941, same pid.
func Failure(at time.Time, pid int, responder string) string {
	return fmt.Sprintf("[%s] [ssl:error] [pid %d] (111)Connection refused: [client 192.0.2.1:443] AH01974: could not connect to OCSP responder '%s'\n", Stamp(at), pid, responder) +
		fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", Stamp(at), pid)
}

// SnapshotTree renders every path, mode, mtime and content under dir, to compare before and
// after.
func SnapshotTree(t testing.TB, dir string) string {
	t.Helper()
	var sb strings.Builder
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		sb.WriteString(p + " " + info.Mode().String() + " " + info.ModTime().String())
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			sb.Write(b)
		}
		sb.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}
