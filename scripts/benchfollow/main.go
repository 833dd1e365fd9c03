// Command benchfollow measures the daemon (`stapling-agent run`) against coreutils `tail -F`
// on the same growing error_log, in one run:
//
//   - latency: -events failure lines appended one at a time; for each, the time from the
//     append to the daemon's decision log line (dry-run, threshold 1, cooldown 0, so every
//     failure is a decision), and to tail -F printing the line;
//   - throughput: -rate lines/s of realistic noise for -seconds, with one failure at the end
//     of every second; the lag of each of those failures shows whether the daemon keeps up;
//   - idle CPU over -idle and peak RSS (VmHWM) of both processes.
//
// It prints a report and exits 1 if a target is missed (p99 latency at most 10x tail -F's in the
// same run; keeps up with at least 150,000 lines/s without growing lag; RSS < 30 MB; idle CPU
// < 1%).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	bin     = flag.String("bin", "", "stapling-agent binary")
	host    = flag.String("host", "", "sample host root (scripts/sample-host.sh)")
	events  = flag.Int("events", 1000, "latency events")
	gap     = flag.Duration("gap", 20*time.Millisecond, "mean time between latency events")
	rate    = flag.Int("rate", 150000, "throughput phase: lines per second")
	seconds = flag.Int("seconds", 10, "throughput phase length")
	idle    = flag.Duration("idle", 5*time.Second, "idle CPU measurement")
	check   = flag.Bool("check", true, "exit 1 when a target is missed")
)

// watcher records when lines matching a pattern arrive on a process's output.
type watcher struct {
	mu   sync.Mutex
	seen []time.Time
	cond *sync.Cond
}

func newWatcher(r io.Reader, match func(string) bool) *watcher {
	w := &watcher{}
	w.cond = sync.NewCond(&w.mu)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if match(sc.Text()) {
				now := time.Now()
				w.mu.Lock()
				w.seen = append(w.seen, now)
				w.cond.Broadcast()
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// wait returns the arrival time of the n-th match (1-based), or zero after timeout.
func (w *watcher) wait(n int, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.seen) < n {
		if time.Now().After(deadline) {
			return time.Time{}
		}
		w.mu.Unlock()
		time.Sleep(time.Millisecond)
		w.mu.Lock()
	}
	return w.seen[n-1]
}

func stamp() string { return time.Now().Format("Mon Jan 02 15:04:05.000000 2006") }

func failure(pid int) string {
	return fmt.Sprintf("[%s] [ssl:error] [pid %d] AH01941: stapling_renew_response: responder error\n", stamp(), pid)
}

func noise(i int) string {
	return fmt.Sprintf("[%s] [proxy_fcgi:error] [pid %d] [client 198.51.100.7:52114] AH01071: Got error 'PHP message: PHP Warning:  Undefined array key \"id\" in /home/shop/public_html/index.php on line %d', referer: https://shop.example.com/\n", stamp(), 2000+i%30000, i%900)
}

func main() {
	flag.Parse()
	logPath := filepath.Join(*host, "var/log/apache2/error_log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		fail(err)
	}
	agent := exec.Command(*bin, "--root", *host, "run", "--dry-run")
	agent.Env = append(os.Environ(), "STAPLING_AGENT_POLICY_THRESHOLD=1", "STAPLING_AGENT_POLICY_COOLDOWN=0s", "STAPLING_AGENT_POLICY_SPREAD=0s")
	agentErr, _ := agent.StderrPipe()
	tail := exec.Command("tail", "-F", "-n", "0", logPath)
	tailOut, _ := tail.StdoutPipe()
	ready := make(chan struct{})
	var once sync.Once
	aw := newWatcher(agentErr, func(s string) bool {
		if strings.Contains(s, "following error_log") {
			once.Do(func() { close(ready) })
		}
		return strings.Contains(s, `"decision":"dry_run"`)
	})
	tw := newWatcher(tailOut, func(s string) bool { return strings.Contains(s, "AH01941") })
	for _, c := range []*exec.Cmd{agent, tail} {
		if err := c.Start(); err != nil {
			fail(err)
		}
		started = append(started, c)
	}
	defer stopAll()
	<-ready
	time.Sleep(500 * time.Millisecond) // let tail -F settle on the file

	w, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail(err)
	}
	// Latency: events at random gaps (uniform in [0, 2*gap)), so appends fall at every phase
	// of the daemon's poll cycle; arrivals are matched in order afterwards.
	sent := make([]time.Time, *events)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range sent {
		sent[i] = time.Now()
		w.WriteString(failure(i + 1))
		time.Sleep(time.Duration(rng.Int64N(int64(2 * *gap))))
	}
	var aLat, tLat []time.Duration
	for i, t0 := range sent {
		a, tt := aw.wait(i+1, 5*time.Second), tw.wait(i+1, 5*time.Second)
		if a.IsZero() || tt.IsZero() {
			fail(fmt.Errorf("event %d not seen (agent %v, tail %v)", i+1, !a.IsZero(), !tt.IsZero()))
		}
		aLat, tLat = append(aLat, a.Sub(t0)), append(tLat, tt.Sub(t0))
	}

	// Throughput: rate lines/s in 10 ms batches; a failure closes every second.
	batch := *rate / 100
	var aLag, tLag []time.Duration
	next := *events
	start := time.Now()
	for s := 0; s < *seconds; s++ {
		for b := 0; b < 100; b++ {
			var sb strings.Builder
			for i := 0; i < batch; i++ {
				sb.WriteString(noise(i))
			}
			w.WriteString(sb.String())
			if sleep := time.Until(start.Add(time.Duration(s)*time.Second + time.Duration(b+1)*10*time.Millisecond)); sleep > 0 {
				time.Sleep(sleep)
			}
		}
		next++
		t0 := time.Now()
		w.WriteString(failure(100000 + next))
		a, tt := aw.wait(next, 30*time.Second), tw.wait(next, 30*time.Second)
		if a.IsZero() || tt.IsZero() {
			fail(fmt.Errorf("throughput: second %d not seen", s+1))
		}
		aLag, tLag = append(aLag, a.Sub(t0)), append(tLag, tt.Sub(t0))
	}
	elapsed := time.Since(start)
	lines := *seconds * 100 * batch

	// Idle.
	a0, t0 := cpuTicks(agent.Process.Pid), cpuTicks(tail.Process.Pid)
	time.Sleep(*idle)
	a1, t1 := cpuTicks(agent.Process.Pid), cpuTicks(tail.Process.Pid)
	tick := 100.0 // USER_HZ on Linux
	aIdle := float64(a1-a0) / tick / idle.Seconds() * 100
	tIdle := float64(t1-t0) / tick / idle.Seconds() * 100
	aRSS, tRSS := hwmKB(agent.Process.Pid), hwmKB(tail.Process.Pid)

	am, ap := pct(aLat, 50), pct(aLat, 99)
	tm, tp := pct(tLat, 50), pct(tLat, 99)
	fmt.Printf("latency over %d events (append -> decision; tail -F: append -> line printed)\n", *events)
	fmt.Printf("  stapling-agent  median %7.1f ms  p99 %7.1f ms\n", ms(am), ms(ap))
	fmt.Printf("  tail -F         median %7.1f ms  p99 %7.1f ms\n", ms(tm), ms(tp))
	fmt.Printf("throughput: %d lines in %.1f s = %.0f lines/s offered\n", lines, elapsed.Seconds(), float64(lines)/elapsed.Seconds())
	fmt.Printf("  stapling-agent lag per second: first %.0f ms, last %.0f ms, max %.0f ms\n", ms(aLag[0]), ms(aLag[len(aLag)-1]), ms(maxDur(aLag)))
	fmt.Printf("  tail -F        lag per second: first %.0f ms, last %.0f ms, max %.0f ms\n", ms(tLag[0]), ms(tLag[len(tLag)-1]), ms(maxDur(tLag)))
	fmt.Printf("idle CPU over %s: stapling-agent %.2f%%, tail -F %.2f%%\n", *idle, aIdle, tIdle)
	fmt.Printf("peak RSS: stapling-agent %.1f MiB, tail -F %.1f MiB\n", float64(aRSS)/1024, float64(tRSS)/1024)
	fmt.Printf("ratios: p99 latency agent/tail = %.2f; max lag agent/tail = %.2f\n", float64(ap)/float64(tp), float64(maxDur(aLag))/float64(maxDur(tLag)))

	if !*check {
		return
	}
	bad := false
	miss := func(ok bool, what string) {
		if !ok {
			fmt.Println("MISSED:", what)
			bad = true
		}
	}
	miss(ap <= 10*tp, "p99 detection latency at most 10x tail -F's")
	// The writer paces itself to -rate; 3% below it is its own scheduling, not the daemon's.
	miss(*rate >= 150000 && float64(lines)/elapsed.Seconds() >= 0.97*float64(*rate), "offered at least 150,000 lines/s (the machine could not write that fast)")
	miss(maxDur(aLag) < time.Second, "keeps up: every per-second failure decided within 1 s")
	miss(aLag[len(aLag)-1] <= aLag[0]+500*time.Millisecond, "lag does not grow over the run")
	miss(aRSS < 30*1024, "resident memory under 30 MB")
	miss(aIdle < 1, "idle CPU under 1%")
	if bad {
		stopAll() // os.Exit skips deferred calls: nothing this started may outlive it
		os.Exit(1)
	}
}

// started are the processes this run started; stopAll ends them on every way out.
var started []*exec.Cmd

func stopAll() {
	for _, c := range started {
		c.Process.Kill()
		c.Wait()
	}
	started = nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

func maxDur(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuTicks is utime+stime from /proc/PID/stat.
func cpuTicks(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

func hwmKB(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			n, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return n
		}
	}
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchfollow:", err)
	stopAll()
	os.Exit(2)
}
