package probe

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/stapling-agent/stapling-agent/logwatch"
)

// ocspPKI is a real CA chain as the probe meets it: root -> issuing intermediate -> leaf,
// with the responder certificates RFC 6960 4.2.2.2 allows and some it does not.
type ocspPKI struct {
	root, inter, leaf *pkiCert
	delegated         *pkiCert // issued by inter, id-kp-OCSPSigning: an authorized responder
	noEKU             *pkiCert // issued by inter without id-kp-OCSPSigning
	rootSigner        *pkiCert // OCSPSigning, but issued by the root, not by the leaf's issuer
	unrelated         *pkiCert // self-signed, nothing to do with the chain
}

type pkiCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue makes a certificate from tmpl, signed by parent (self-signed when parent is nil).
func issue(t *testing.T, tmpl *x509.Certificate, parent *pkiCert) *pkiCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Random like a real CA's (CA/B Baseline Requirements 7.1: 64 bits of entropy).
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64)); err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pkiCert{c, key}
}

func newOCSPPKI(t *testing.T) *ocspPKI {
	t.Helper()
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	}
	responder := func(cn string, eku ...x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku}
	}
	p := &ocspPKI{}
	p.root = issue(t, ca("Test Root"), nil)
	p.inter = issue(t, ca("Test Issuing CA"), p.root)
	p.leaf = issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "shop.example"}, DNSNames: []string{"shop.example"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, p.inter)
	p.delegated = issue(t, responder("Test OCSP Responder", x509.ExtKeyUsageOCSPSigning), p.inter)
	p.noEKU = issue(t, responder("Test Not A Responder", x509.ExtKeyUsageServerAuth), p.inter)
	p.rootSigner = issue(t, responder("Test Root OCSP Responder", x509.ExtKeyUsageOCSPSigning), p.root)
	p.unrelated = issue(t, ca("Unrelated CA"), nil)
	return p
}

func TestVerifyOCSP(t *testing.T) {
	p := newOCSPPKI(t)
	now := time.Now()
	// respond signs a "good" response about serial with signer's key; embed is the
	// certificate put in the response, nil for none (openssl's -resp_no_certs).
	respond := func(signer, embed *pkiCert, serial *big.Int, status int) []byte {
		t.Helper()
		tmpl := ocsp.Response{Status: status, SerialNumber: serial, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}
		if status == ocsp.Revoked {
			tmpl.RevokedAt = now.Add(-time.Hour)
		}
		responderCert := signer.cert
		if embed != nil {
			tmpl.Certificate = embed.cert
			responderCert = embed.cert
		}
		der, err := ocsp.CreateResponse(p.inter.cert, responderCert, tmpl, signer.key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	leafSerial := p.leaf.cert.SerialNumber
	cases := []struct {
		name       string
		der        []byte
		issuer     *x509.Certificate
		wantStatus int
		wantErr    error  // errors.Is target; nil for success
		wantText   string // in the error's text
	}{
		// The real-world case x/crypto reports as "bad OCSP signature": openssl ocsp -rsigner
		// intermediate, which embeds the intermediate by default.
		{name: "issuer signs, issuer embedded", der: respond(p.inter, p.inter, leafSerial, ocsp.Good), issuer: p.inter.cert, wantStatus: ocsp.Good},
		{name: "issuer signs, no certificate", der: respond(p.inter, nil, leafSerial, ocsp.Good), issuer: p.inter.cert, wantStatus: ocsp.Good},
		{name: "delegated responder embedded", der: respond(p.delegated, p.delegated, leafSerial, ocsp.Good), issuer: p.inter.cert, wantStatus: ocsp.Good},
		{name: "revoked passes through", der: respond(p.inter, p.inter, leafSerial, ocsp.Revoked), issuer: p.inter.cert, wantStatus: ocsp.Revoked},
		{name: "delegated without OCSPSigning EKU", der: respond(p.noEKU, p.noEKU, leafSerial, ocsp.Good), issuer: p.inter.cert,
			wantErr: ErrOCSPSigner, wantText: "CN=Test Not A Responder, which the issuer issued without the OCSP Signing extended key usage"},
		{name: "responder issued by the root, not the issuer", der: respond(p.rootSigner, p.rootSigner, leafSerial, ocsp.Good), issuer: p.inter.cert,
			wantErr: ErrOCSPSigner, wantText: "signed by CN=Test Root OCSP Responder, which is neither the issuer (CN=Test Issuing CA) nor a delegated OCSP signer it issued"},
		{name: "root signs, root embedded", der: respond(p.root, p.root, leafSerial, ocsp.Good), issuer: p.inter.cert,
			wantErr: ErrOCSPSigner, wantText: "signed by CN=Test Root"},
		{name: "unrelated signer embedded", der: respond(p.unrelated, p.unrelated, leafSerial, ocsp.Good), issuer: p.inter.cert,
			wantErr: ErrOCSPSigner, wantText: "signed by CN=Unrelated CA, which is neither"},
		{name: "unrelated signer not embedded", der: respond(p.unrelated, nil, leafSerial, ocsp.Good), issuer: p.inter.cert,
			wantErr: ErrOCSPSignature, wantText: "does not verify with the key of CN=Test Issuing CA"},
		// The embedded certificate is the issuer's, but another key signed: x/crypto's own
		// check of the embedded certificate catches it.
		{name: "embedded issuer did not sign", der: respond(p.unrelated, p.inter, leafSerial, ocsp.Good), issuer: p.inter.cert,
			wantText: "bad signature on embedded certificate"},
		{name: "another serial", der: respond(p.inter, p.inter, big.NewInt(0xBAD), ocsp.Good), issuer: p.inter.cert,
			wantErr: ErrOCSPSerial, wantText: fmt.Sprintf("status for serial BAD, the certificate's is %X", leafSerial)},
		{name: "tryLater", der: ocsp.TryLaterErrorResponse, issuer: p.inter.cert, wantErr: ocsp.ResponseError{Status: ocsp.TryLater}},
		{name: "unauthorized", der: ocsp.UnauthorizedErrorResponse, issuer: p.inter.cert, wantErr: ocsp.ResponseError{Status: ocsp.Unauthorized}},
		{name: "garbage", der: []byte("<html>"), issuer: p.inter.cert, wantText: "parse OCSP response"},
		// A staple from a server whose chain we lack: only the embedded certificate's own
		// signature can be checked, and a response without one cannot be checked at all.
		{name: "no issuer, signer embedded", der: respond(p.delegated, p.delegated, leafSerial, ocsp.Good), wantStatus: ocsp.Good},
		{name: "no issuer, no certificate", der: respond(p.unrelated, nil, leafSerial, ocsp.Good), wantStatus: ocsp.Good},
		{name: "no issuer, embedded certificate did not sign", der: respond(p.unrelated, p.inter, leafSerial, ocsp.Good),
			wantText: "bad signature on embedded certificate"},
		{name: "no issuer, another serial", der: respond(p.inter, p.inter, big.NewInt(0xBAD), ocsp.Good), wantErr: ErrOCSPSerial},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := VerifyOCSP(c.der, p.leaf.cert, c.issuer)
			if c.wantErr == nil && c.wantText == "" {
				if err != nil {
					t.Fatalf("VerifyOCSP: %v", err)
				}
				if resp.Status != c.wantStatus || resp.SerialNumber.Cmp(leafSerial) != 0 {
					t.Fatalf("status %d serial %X, want %d %X", resp.Status, resp.SerialNumber, c.wantStatus, leafSerial)
				}
				return
			}
			if err == nil || resp != nil {
				t.Fatalf("VerifyOCSP = %v, %v; want an error", resp, err)
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("error %q is not %q", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantText) {
				t.Errorf("error %q lacks %q", err, c.wantText)
			}
			// ocspOutcome and probeResponder tell error responses from broken ones by type.
			var re ocsp.ResponseError
			_, wantRE := c.wantErr.(ocsp.ResponseError)
			if isRE := errors.As(err, &re); isRE != wantRE {
				t.Errorf("error %T (%v): errors.As ResponseError = %v, want %v", err, err, isRE, wantRE)
			}
		})
	}
	if _, err := VerifyOCSP(respond(p.inter, nil, leafSerial, ocsp.Good), nil, p.inter.cert); err == nil {
		t.Error("VerifyOCSP with no leaf succeeded")
	}
}

// TestProbeResponderOpenSSL queries real `openssl ocsp` responders through probeResponder,
// signing the ways CAs do: with the issuing CA's key (certificate embedded, openssl's
// default, or not) and with a delegated responder certificate; and with the root's key,
// which RFC 6960 does not allow for the intermediate's certificates.
func TestProbeResponderOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl missing in CI: %v", err)
		}
		t.Skip("openssl not installed")
	}
	p := newOCSPPKI(t)
	dir := t.TempDir()
	write := func(name string, c *pkiCert) (certPath, keyPath string) {
		t.Helper()
		keyDER, err := x509.MarshalPKCS8PrivateKey(c.key)
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		for path, b := range map[string]*pem.Block{certPath: {Type: "CERTIFICATE", Bytes: c.cert.Raw}, keyPath: {Type: "PRIVATE KEY", Bytes: keyDER}} {
			if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return certPath, keyPath
	}
	interPEM, interKey := write("intermediate", p.inter)
	delegatedPEM, delegatedKey := write("delegated", p.delegated)
	rootPEM, rootKey := write("root", p.root)
	// openssl's CA database (ca(1)): status, expiry, revocation date (empty), serial in
	// uppercase hex, file name, subject.
	index := filepath.Join(dir, "index.txt")
	line := fmt.Sprintf("V\t%s\t\t%X\tunknown\t/CN=shop.example\n", p.leaf.cert.NotAfter.UTC().Format("060102150405Z"), p.leaf.cert.SerialNumber)
	if err := os.WriteFile(index, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cf := &CertFile{Leaf: p.leaf.cert, Issuer: p.inter.cert}

	cases := []struct {
		name  string
		args  []string
		ok    bool
		cause logwatch.Cause
		text  string
	}{
		{name: "intermediate signs, certificate included", args: []string{"-rsigner", interPEM, "-rkey", interKey}, ok: true},
		{name: "intermediate signs, -resp_no_certs", args: []string{"-rsigner", interPEM, "-rkey", interKey, "-resp_no_certs"}, ok: true},
		{name: "delegated responder signs", args: []string{"-rsigner", delegatedPEM, "-rkey", delegatedKey}, ok: true},
		{name: "root signs", args: []string{"-rsigner", rootPEM, "-rkey", rootKey}, cause: logwatch.CauseDecodeError, text: "signed by CN=Test Root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := startOpenSSLResponder(t, dir, append([]string{"-index", index, "-CA", interPEM}, c.args...))
			r := probeResponder(context.Background(), url, cf, 5*time.Second)
			if r.OK != c.ok || r.Cause != string(c.cause) || !strings.Contains(r.Error, c.text) {
				t.Fatalf("probeResponder = %+v, want ok %v cause %q error containing %q", r, c.ok, c.cause, c.text)
			}
			if c.ok && (r.HTTPStatus != 200 || r.OCSPStatus != "successful" || r.CertStatus != "good") {
				t.Fatalf("probeResponder = %+v, want HTTP 200, successful, good", r)
			}
		})
	}
}

// startOpenSSLResponder runs `openssl ocsp` as a responder with args on a free port and
// returns its URL once it listens; the responder is killed and reaped when the test ends.
//
// OpenSSL 3's -port takes a number and listens on all addresses, so the free port is
// found on all addresses too; another process can still take it in between, hence the
// retries. Readiness comes from /proc/net/tcp{,6}, not from connecting: a client that
// connects and closes without a request sends the responder into a busy loop.
func startOpenSSLResponder(t *testing.T, dir string, args []string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		logPath := filepath.Join(dir, fmt.Sprintf("openssl-ocsp-%d.log", port))
		log, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("openssl", append([]string{"ocsp", "-port", strconv.Itoa(port), "-nmin", "60", "-ignore_err"}, args...)...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			t.Fatalf("%s: %v", cmd, err)
		}
		log.Close()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		switch err := waitListening(port, exited); {
		case err == nil:
			return fmt.Sprintf("http://127.0.0.1:%d/", port)
		case attempt < 3 && errors.Is(err, errResponderExited):
			out, _ := os.ReadFile(logPath)
			t.Logf("%s: %v (port taken?), retrying:\n%s", cmd, err, out)
		default:
			out, _ := os.ReadFile(logPath)
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
	}
}

var errResponderExited = errors.New("responder exited")

// waitListening returns once something listens on port, polling /proc/net/tcp{,6}; or an
// error once the responder exits or 10 seconds pass.
func waitListening(port int, exited chan error) error {
	// "0A" is TCP_LISTEN in the st column (include/net/tcp_states.h).
	want := fmt.Sprintf(":%04X ", port)
	listening := func() bool {
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, _ := os.ReadFile(f)
			for _, l := range bytes.Split(b, []byte("\n"))[1:] {
				fields := strings.Fields(string(l))
				if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", want) && fields[3] == "0A" {
					return true
				}
			}
		}
		return false
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !listening() {
		select {
		case err := <-exited:
			exited <- err // for the cleanup's reap
			return fmt.Errorf("%w: %v", errResponderExited, err)
		case <-deadline:
			return errors.New("not listening after 10s")
		case <-tick.C:
		}
	}
	return nil
}
