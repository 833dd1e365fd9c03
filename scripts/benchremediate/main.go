// Command benchremediate measures how fast the daemon fixes a real incident on a real Apache
// (scripts/lab.sh): the lab's OCSP responder is black-holed (it accepts and never answers, so
// every handshake that asks for a staple waits mod_ssl's SSLStaplingResponderTimeout, 3 s, in
// turn), clients keep connecting, and `stapling-agent run` (enforce) must decide, check the
// responder itself, and remediate. It reports, from the threshold-reaching AH01941 line's own
// timestamp:
//
//   - to the include written (the journal's "written" step), target <= 5 s;
//   - to Apache restarted (the journal's "done" step), target <= 10 s;
//
// and, as the reference in the same run on the same Apache, the manual fix an admin types
// (append `SSLUseStapling off` to the include, apachectl -t, restartsrv_httpd), so the ratio
// daemon/manual says what the corroboration and the checks cost on top of the restart itself.
// It exits 1 when a target is missed (with -check).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

var (
	bin   = flag.String("bin", "", "stapling-agent binary")
	lab   = flag.String("lab", "scripts/lab.sh", "lab script")
	check = flag.Bool("check", true, "exit 1 when a target is missed")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchremediate:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "benchremediate")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command(*lab, "up", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("lab up: %v\n%s", err, out)
	}
	defer func() {
		if out, err := exec.Command(*lab, "down", dir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "lab down: %v\n%s", err, out)
		}
	}()
	env := labEnv(dir)
	if out, err := exec.Command(*lab, "responder", "stop", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("responder stop: %v\n%s", err, out)
	}
	// The black hole: accepts, never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:"+env["OCSP_PORT"])
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	restart := filepath.Join(dir, "usr/local/cpanel/scripts/restartsrv_httpd")
	if out, err := exec.Command(restart).CombinedOutput(); err != nil { // a fresh staple cache
		return fmt.Errorf("restart: %v\n%s", err, out)
	}

	daemon := exec.Command(*bin, "--root", dir, "run")
	// The fleet spread (a random wait of up to policy.spread before acting) is deliberate
	// latency, not what this benchmark measures.
	daemon.Env = append(os.Environ(), "STAPLING_AGENT_POLICY_SPREAD=0s")
	var stderr syncBuffer
	daemon.Stderr = &stderr
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		daemon.Process.Signal(os.Interrupt)
		daemon.Wait()
	}()
	if !waitFor(10*time.Second, func() bool { return strings.Contains(stderr.String(), "following error_log") }) {
		return fmt.Errorf("daemon did not start:\n%s", stderr.String())
	}

	// Clients: four at a time, each asking for a staple, until the daemon is done.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				d := &net.Dialer{Timeout: 15 * time.Second}
				c, err := tls.DialWithDialer(d, "tcp", "127.0.0.1:"+env["HTTPS_PORT"], &tls.Config{ServerName: "shop.test", InsecureSkipVerify: true})
				if err == nil {
					c.Close()
				}
			}
		}()
	}
	journal := filepath.Join(dir, "var/lib/stapling-agent/journal.jsonl")
	var written, done time.Time
	ok := waitFor(60*time.Second, func() bool {
		written, done = steps(journal)
		return !done.IsZero()
	})
	cancel()
	wg.Wait()
	if !ok {
		return fmt.Errorf("no remediation within 60 s:\n%s", stderr.String())
	}
	threshold, err := thresholdLine(filepath.Join(dir, "var/log/apache2/error_log"), 3)
	if err != nil {
		return err
	}

	// The reference: the manual fix on the same Apache, after a revert to the old include.
	inc := filepath.Join(dir, "etc/apache2/conf.d/includes/pre_virtualhost_global.conf")
	if err := os.WriteFile(inc, []byte("# Pre VirtualHost Include (All Versions)\nKeepAliveTimeout 5\n"), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command(restart).CombinedOutput(); err != nil {
		return fmt.Errorf("restart: %v\n%s", err, out)
	}
	start := time.Now()
	f, err := os.OpenFile(inc, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	fmt.Fprintln(f, "SSLUseStapling off")
	f.Close()
	for _, argv := range [][]string{{filepath.Join(dir, "usr/sbin/apachectl"), "-t"}, {restart}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v\n%s", argv, err, out)
		}
	}
	manual := time.Since(start)

	toWrite, toDone := written.Sub(threshold), done.Sub(threshold)
	fmt.Printf("black-holed responder, SSLStaplingResponderTimeout 3 s, 4 clients asking for staples\n")
	fmt.Printf("  threshold-reaching AH01941 -> include written:  %6.2f s (target <= 5 s)\n", toWrite.Seconds())
	fmt.Printf("  threshold-reaching AH01941 -> Apache restarted: %6.2f s (target <= 10 s)\n", toDone.Seconds())
	fmt.Printf("  reference, the manual fix (append, apachectl -t, restartsrv_httpd): %.2f s\n", manual.Seconds())
	fmt.Printf("ratio daemon (threshold -> restarted) / manual fix = %.2f\n", toDone.Seconds()/manual.Seconds())
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, `"decision":"remediate"`) || strings.Contains(line, "impact:") {
			fmt.Println("  " + line)
		}
	}
	if *check && (toWrite > 5*time.Second || toDone > 10*time.Second) {
		return fmt.Errorf("target missed")
	}
	return nil
}

// steps are the times of the journal's first remediate "written" and "done" entries.
func steps(journal string) (written, done time.Time) {
	b, _ := os.ReadFile(journal)
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct {
			Time   time.Time
			Action string
			Step   string
		}
		if json.Unmarshal(line, &e) != nil || e.Action != "remediate" {
			continue
		}
		if e.Step == "written" && written.IsZero() {
			written = e.Time
		}
		if e.Step == "done" && done.IsZero() {
			done = e.Time
		}
	}
	return written, done
}

// thresholdLine is the timestamp of the nth AH01941 line (Apache writes local time).
func thresholdLine(path string, n int) (time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	seen := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "[ssl:error]") || !strings.Contains(line, "AH01941") {
			continue
		}
		if seen++; seen == n {
			end := strings.IndexByte(line, ']')
			return time.ParseInLocation("Mon Jan 02 15:04:05.000000 2006", line[1:end], time.Local)
		}
	}
	return time.Time{}, fmt.Errorf("fewer than %d AH01941 lines in %s", n, path)
}

func labEnv(dir string) map[string]string {
	b, _ := os.ReadFile(filepath.Join(dir, "lab.env"))
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
