//go:build unix

package logwatch

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const apacheBin = "/usr/sbin/apache2" // Debian's apache2; .ci installs it

// needApache skips without Apache, except in CI, where a skip would prove nothing.
func needApache(t *testing.T) {
	t.Helper()
	if testing.Short() {
		if os.Getenv("CI") != "" {
			t.Fatal("-short in CI would skip the real-Apache tests")
		}
		t.Skip("real-Apache test skipped under -short")
	}
	if _, err := os.Stat(apacheBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing in CI: %v", apacheBin, err)
		}
		t.Skipf("%s not installed (apt-get install apache2)", apacheBin)
	}
}

// stapleCerts writes a CA and one leaf per vhost name, each naming its OCSP responder.
func stapleCerts(t *testing.T, dir string, ocsp map[string]string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "logwatch test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	serial := int64(2)
	for name, url := range ocsp {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			OCSPServer: []string{url},
		}
		serial++
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
		os.WriteFile(filepath.Join(dir, name+".crt"), chain, 0o644)
		os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	}
}

// hangingResponder accepts connections and never answers: mod_ssl's read times out.
func hangingResponder(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// apacheRun starts Apache in the foreground with the given MPM and ErrorLogFormat ("" for
// the default), makes one handshake asking for a staple to each vhost in turn, waiting for
// each one's AH01941, stops Apache and returns its error_log.
func apacheRun(t *testing.T, certs, mpm, format, tz string, vhosts []string) []byte {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	mod := "/usr/lib/apache2/modules"
	var conf strings.Builder
	fmt.Fprintf(&conf, `ServerRoot %[1]s
ServerName localhost
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
Mutex file:%[1]s default
ErrorLog %[1]s/error_log
LogLevel warn
LoadModule mpm_%[2]s_module %[3]s/mod_mpm_%[2]s.so
LoadModule authz_core_module %[3]s/mod_authz_core.so
LoadModule socache_shmcb_module %[3]s/mod_socache_shmcb.so
LoadModule ssl_module %[3]s/mod_ssl.so
Listen 127.0.0.1:%[4]s
SSLStaplingCache shmcb:%[1]s/stapling(65536)
SSLStaplingResponderTimeout 1
`, dir, mpm, mod, port)
	if format != "" {
		fmt.Fprintf(&conf, "ErrorLogFormat %q\n", format)
	}
	for _, v := range vhosts {
		fmt.Fprintf(&conf, `<VirtualHost 127.0.0.1:%s>
ServerName %s
SSLEngine on
SSLCertificateFile %s/%s.crt
SSLCertificateKeyFile %s/%s.key
SSLUseStapling on
</VirtualHost>
`, port, v, certs, v, certs, v)
	}
	confPath := filepath.Join(dir, "httpd.conf")
	os.WriteFile(confPath, []byte(conf.String()), 0o644)
	cmd := exec.Command(apacheBin, "-f", confPath, "-D", "FOREGROUND")
	cmd.Env = append(os.Environ(), "TZ="+tz)
	// Its own process group: at shutdown prefork signals its whole group (killpg), which
	// would otherwise be the test binary's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		// By the pid Apache wrote (in the foreground it is cmd's), then wait: the parent
		// reaps its children before it exits.
		pid := cmd.Process.Pid
		if b, err := os.ReadFile(filepath.Join(dir, "httpd.pid")); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				pid = p
			}
		}
		syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("apache did not stop on SIGTERM")
		}
	}
	t.Cleanup(stop)
	logPath := filepath.Join(dir, "error_log")
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			select {
			case err := <-done:
				stopped = true
				log, _ := os.ReadFile(logPath)
				t.Fatalf("apache exited (%v) waiting for %s:\n%s\n%s", err, what, out.String(), log)
			default:
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(logPath)
				t.Fatalf("timed out waiting for %s:\n%s\n%s", what, out.String(), log)
			}
		}
	}
	waitUntil("apache to listen", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	for i, v := range vhosts {
		// Go's client always sends status_request; the staple itself does not matter.
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", "127.0.0.1:"+port,
			&tls.Config{ServerName: v, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake with %s: %v", v, err)
		}
		c.Close()
		waitUntil(v+"'s AH01941", func() bool {
			b, _ := os.ReadFile(logPath)
			return bytes.Count(b, []byte("AH01941: ")) >= i+1
		})
	}
	stop()
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	return log
}

type runEvent struct {
	key  string // what must agree across formats
	proc string
	time time.Time
}

func runEvents(t *testing.T, f *Format, log []byte) ([]runEvent, []string) {
	var evs []runEvent
	var fails []string
	var c Correlator
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		ev := f.Classify(sc.Bytes())
		if ev.Kind == KindNone || ev.Kind == KindInit {
			continue
		}
		evs = append(evs, runEvent{
			key:  fmt.Sprintf("%s %s level=%s status=%q cause=%s responder=%s", ev.Kind, ev.Code, ev.Level, ev.Status, ev.Cause, ev.Responder),
			proc: ev.Proc, time: ev.Time,
		})
		if fl, ok := c.Add(ev); ok {
			fails = append(fails, fmt.Sprintf("%s@%s", fl.Cause, fl.Responder))
		}
	}
	return evs, fails
}

// TestFormatMatchesApache runs Debian's Apache with its default format and with custom
// ErrorLogFormats, against a responder that refuses and one that never answers, and checks
// that Format.Classify finds in each custom log the very events Classify finds in the
// default one, with the workers joined the same way (Correlator) and the times right.
func TestFormatMatchesApache(t *testing.T) {
	needApache(t)
	certs := t.TempDir()
	hang := hangingResponder(t)
	stapleCerts(t, certs, map[string]string{
		"refused.test": "http://127.0.0.1:9/", // discard port: nothing listens
		"timeout.test": "http://" + hang + "/",
	})
	vhosts := []string{"refused.test", "timeout.test"}
	want := []string{
		`transport AH01974 level=error status="111" cause=connect_refused responder=127.0.0.1:9`,
		`responder_failure AH01941 level=error status="" cause= responder=`,
		`transport AH01977 level=error status="70007" cause=read_timeout responder=`,
		`transport AH01980 level=error status="" cause=empty_response responder=`,
		`responder_failure AH01941 level=error status="" cause= responder=`,
	}
	wantFails := []string{"connect_refused@127.0.0.1:9", "read_timeout@"}
	pidTid, pidOnly := regexp.MustCompile(`^\d+:tid \d+$`), regexp.MustCompile(`^\d+$`)
	for _, c := range []struct {
		name, mpm, format, tz string
		proc                  *regexp.Regexp
	}{
		{"default event", "event", "", "UTC", pidTid},
		{"default prefork", "prefork", "", "UTC", pidTid}, // 2.4.71 logs gettid() even on prefork
		{"brief example prefork", "prefork", `[%{u}t] [%-m:%l] [pid %P] %E: %M`, "UTC", pidOnly},
		{"documentation example event", "event", docFormat, "UTC", pidTid},
		{"documentation example prefork", "prefork", docFormat, "UTC", pidOnly}, // %T empty: " %T]" erased
		{"compact with zone", "event", `%{cuz}t %m %l %P %{g}T %E: %a %M`, "IST-5:30", pidTid},
		{"msec, separators", "prefork", `%{mc}t% |%-m|%l|% pid=%P% %E:% %M`, "UTC", pidOnly},
		{"one JSON field", "event", `{"time":"%{%Y-%m-%dT%H:%M:%S%z}t","module":"%-m","level":"%l","pid":"%P","status":"%-E","client":"%-a","message":"%M","referer":"%-{Referer}i"}`, "UTC", pidOnly},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f *Format
			if c.format != "" {
				f = mustFormat(t, c.format)
			}
			start := time.Now().Add(-time.Second)
			log := apacheRun(t, certs, c.mpm, c.format, c.tz, vhosts)
			end := time.Now().Add(time.Second)
			evs, fails := runEvents(t, f, log)
			var keys []string
			for _, ev := range evs {
				keys = append(keys, ev.key)
				if !c.proc.MatchString(ev.proc) {
					t.Errorf("proc %q does not match %v", ev.proc, c.proc)
				}
				if ev.time.Before(start) || ev.time.After(end) {
					t.Errorf("event time %v outside the run (%v to %v)", ev.time, start, end)
				}
			}
			if strings.Join(keys, "\n") != strings.Join(want, "\n") || strings.Join(fails, " ") != strings.Join(wantFails, " ") {
				t.Fatalf("events:\n%s\nfailures %v\nwant:\n%s\nfailures %v\nlog:\n%s", strings.Join(keys, "\n"), fails, strings.Join(want, "\n"), wantFails, log)
			}
			// The scan over the same file finds the same events.
			p := filepath.Join(t.TempDir(), "error_log")
			os.WriteFile(p, log, 0o644)
			n := 0
			if _, err := ScanHistoryFormat(t.Context(), p, f, start, end, func(ev Event) {
				if ev.Kind != KindInit {
					n++
				}
			}); err != nil || n != len(want) {
				t.Fatalf("ScanHistoryFormat: %d events, %v", n, err)
			}
		})
	}
}
