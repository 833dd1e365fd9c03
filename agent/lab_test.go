package agent

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lab is a real Apache laid out like a cPanel EA4 host (scripts/lab.sh), with a test CA and
// an openssl ocsp responder on 127.0.0.1.
type lab struct {
	t         *testing.T
	dir       string
	httpsPort string
	ocspPort  string
	roots     *x509.CertPool
}

// needLab skips when Apache or openssl is missing, except in CI, where a missing dependency
// is a failure: .ci/run installs them, and an end-to-end test that skips there proves nothing.
func needLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		if os.Getenv("CI") != "" {
			t.Fatal("-short in CI would skip the end-to-end tests")
		}
		t.Skip("end-to-end test skipped under -short")
	}
	for _, bin := range []string{"/usr/sbin/apache2", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing in CI: %v", bin, err)
			}
			t.Skipf("%s not installed (apt-get install apache2 openssl)", bin)
		}
	}
}

func startLab(t *testing.T, labEnv ...string) *lab {
	t.Helper()
	needLab(t)
	dir := t.TempDir()
	l := &lab{t: t, dir: dir}
	up := exec.Command("../scripts/lab.sh", "up", dir)
	up.Env = append(os.Environ(), labEnv...)
	out, err := up.CombinedOutput()
	t.Cleanup(func() {
		// Down stops Apache by its pid and fails when anything survives; a lab left running
		// would outlive the test (the suite's testguard would fail it too).
		if out, err := exec.Command("../scripts/lab.sh", "down", dir).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "lab.env"))
	for _, line := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(line, "HTTPS_PORT="); ok {
			l.httpsPort = v
		}
		if v, ok := strings.CutPrefix(line, "OCSP_PORT="); ok {
			l.ocspPort = v
		}
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca/ca.crt"))
	l.roots = x509.NewCertPool()
	l.roots.AppendCertsFromPEM(ca)
	return l
}

func (l *lab) script(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("../scripts/lab.sh", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("lab.sh %v: %v\n%s", args, err, out)
	}
}

func (l *lab) responderStop() { l.script("responder", "stop", l.dir) }

// restart runs the restartsrv_httpd stand-in (graceful restart: clears the staple cache).
func (l *lab) restart() {
	l.t.Helper()
	out, err := exec.Command(filepath.Join(l.dir, "usr/local/cpanel/scripts/restartsrv_httpd")).CombinedOutput()
	if err != nil {
		l.t.Fatalf("restart: %v\n%s", err, out)
	}
}

// hangResponder replaces the responder with a listener that accepts and never answers: the
// black-holed responder of a real incident, where every handshake waits for the timeout.
func (l *lab) hangResponder() {
	l.t.Helper()
	l.responderStop()
	var ln net.Listener
	waitFor(l.t, "the responder's port to be free", func() bool {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:"+l.ocspPort)
		return err == nil
	})
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
	l.t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
}

type handshake struct {
	dur     time.Duration
	stapled bool
	err     error
}

// handshake connects as a browser would, asking for a staple (Go's client always sends
// status_request), and verifies the chain against the lab CA.
func (l *lab) handshake(servername string) handshake {
	return l.handshakeAt(l.httpsPort, servername)
}

// handshakeAt is handshake on another of the lab's ports (with FRONT=nginx, Apache's backend
// port, which a client can still reach directly).
func (l *lab) handshakeAt(port, servername string) handshake {
	d := &net.Dialer{Timeout: 10 * time.Second}
	start := time.Now()
	c, err := tls.DialWithDialer(d, "tcp", "127.0.0.1:"+port, &tls.Config{ServerName: servername, RootCAs: l.roots})
	h := handshake{dur: time.Since(start), err: err}
	if err == nil {
		h.stapled = len(c.ConnectionState().OCSPResponse) > 0
		c.Close()
	}
	return h
}

// nginxReload (FRONT=nginx) reloads nginx and returns once its new worker runs: nothing is
// cached there, so the next handshake that asks for a staple makes nginx fetch one.
func (l *lab) nginxReload() { l.script("nginx", "reload", l.dir) }

// nginxErrorLog (FRONT=nginx) is nginx's error log, at ea-nginx's path under the lab.
func (l *lab) nginxErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(l.dir, "var/log/nginx/error.log"))
	return string(b)
}

func (l *lab) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(l.dir, "var/log/apache2/error_log"))
	return string(b)
}

func (l *lab) restarts() int {
	b, _ := os.ReadFile(filepath.Join(l.dir, "var/log/restarts.log"))
	return strings.Count(string(b), "restartsrv_httpd")
}

func (l *lab) include() string {
	b, _ := os.ReadFile(filepath.Join(l.dir, ea4Include))
	return string(b)
}

// daemonProc is `stapling-agent run` on the lab.
type daemonProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

func (l *lab) startDaemon(env ...string) *daemonProc {
	l.t.Helper()
	cmd := exec.Command(agentBin, "--root", l.dir, "run")
	cmd.Env = append(os.Environ(), env...)
	d := &daemonProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	l.t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(l.t, "the daemon to follow error_log", func() bool { return strings.Contains(d.stderr.String(), "following error_log") })
	return d
}

// stop sends SIGTERM and returns the "lines" the daemon reported having read.
func (d *daemonProc) stop(t *testing.T) int {
	t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon exit: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not stop")
	}
	sc := bufio.NewScanner(strings.NewReader(d.stderr.String()))
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, `"message":"stopped"`) {
			i := strings.Index(line, `"lines":`)
			n, _ := strconv.Atoi(strings.SplitN(line[i+8:], ",", 2)[0])
			return n
		}
	}
	t.Fatalf("no stop line:\n%s", d.stderr.String())
	return 0
}
