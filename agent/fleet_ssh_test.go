package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fleet over SSH (issue 15): Ansible drives ten booted hosts (scripts/systemd-bed.sh, one
// shared read-only root file system with an overlay per host), each running sshd on its own
// address on a bridge in a network namespace of the test's own, each in a different state, and
// an eleventh inventory host that no machine answers for. What the playbooks report is what
// the real hosts are.

// fleetHost is one inventory host: its address on the bridge, how it is laid out, and what
// happens to it before the playbook runs.
type fleetHost struct {
	name, addr string
	layout     string // BED_LAYOUT: ea4, ea3, none ("" for ea4)
	mustStaple bool
	state      string // healthy, blackhole, refused, remediated, paused, none (no machine)
	binary     bool   // audited with the copied static binary, not the installed package
	want       string // the audit's status in the report
	b          *bed
}

// fleetNet is a network namespace held open by a sleeping process, with a bridge br0 at
// 10.77.0.1/24: the hosts' veths join it and Ansible runs in it. Nothing of it outlives the
// test (the namespace goes with its last process).
type fleetNet struct {
	holder *exec.Cmd
	ns     string
}

func newFleetNet(t *testing.T) *fleetNet {
	t.Helper()
	holder := exec.Command("unshare", "--net", "sleep", "infinity")
	// Its own process group: no signal meant for the test reaches it, and cleanup kills it.
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	n := &fleetNet{holder: holder, ns: fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)}
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	// unshare has entered the new namespace once its net link differs from ours.
	mine, _ := os.Readlink("/proc/self/ns/net")
	for i := 0; ; i++ {
		if theirs, err := os.Readlink(n.ns); err == nil && theirs != mine {
			break
		}
		if i == 100 {
			t.Fatal("unshare --net did not enter a namespace of its own")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, argv := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", "10.77.0.1/24", "dev", "br0"},
		{"ip", "link", "set", "br0", "up"},
	} {
		if out, err := n.command(argv...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	return n
}

// command is argv run in the namespace (its network only: mounts and the rest are ours).
func (n *fleetNet) command(argv ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.ns, "--"}, argv...)...)
}

// startFleetHost boots h on the bridge (BED_BRIDGE, BED_ADDR) with root's key.
func startFleetHost(t *testing.T, n *fleetNet, h *fleetHost, deb, pubKey string) error {
	b := &bed{t: t, dir: t.TempDir()}
	layout := h.layout
	if layout == "" {
		layout = "ea4"
	}
	up := n.command("../scripts/systemd-bed.sh", "up", b.dir)
	up.Env = append(os.Environ(), "BED_DEB="+deb, "BED_BRIDGE=br0", "BED_ADDR="+h.addr+"/24",
		"BED_SSH_KEY="+pubKey, "BED_NAME="+h.name, "BED_LAYOUT="+layout)
	if h.mustStaple {
		up.Env = append(up.Env, "BED_MUSTSTAPLE=1")
	}
	out, err := up.CombinedOutput()
	var cgs []string
	t.Cleanup(func() {
		if out, err := exec.Command("../scripts/systemd-bed.sh", "down", b.dir).CombinedOutput(); err != nil {
			t.Errorf("%s down: %v\n%s", h.name, err, out)
		}
		if err := noCgroupsLeft(cgs); err != nil {
			t.Errorf("%s: %v", h.name, err)
		}
	})
	if err != nil {
		return fmt.Errorf("%s up: %v\n%s", h.name, err, out)
	}
	// Ten hosts booting at once: each in cgroups of its own, or their units collide.
	if cgs, err = b.ownCgroups(); err != nil {
		return fmt.Errorf("%s: %v", h.name, err)
	}
	h.b = b
	return nil
}

// tryHandshake is one handshake to shop.test inside the host, asking for a staple; it fails
// nothing (it runs in goroutines) and says whether a staple came.
func (b *bed) tryHandshake() (bool, string) {
	out, errOut, code := b.run("bash", "-c", `timeout 20 openssl s_client -connect 127.0.0.1:443 -servername shop.test -status -CAfile /etc/stapling-bed/ca/ca.crt </dev/null 2>&1`)
	return code == 0 && strings.Contains(out, "OCSP Response Status: successful"), out + errOut
}

// try is sh without failing the test: for goroutines.
func (b *bed) try(script string) error {
	out, errOut, code := b.run("bash", "-euc", script)
	if code != 0 {
		return fmt.Errorf("%s: exit %d\n%s%s", script, code, out, errOut)
	}
	return nil
}

// prepare puts the booted host in its state: a healthy responder and a stapled handshake; the
// responder black-holed (every handshake waits mod_ssl's 3 s timeout) or refusing, then a
// handshake, so mod_ssl writes real failure lines; remediated (the outage, then
// `stapling-agent remediate` for real: include, config test, restart); paused (the outage with
// the fleet's pause file dropped).
func (h *fleetHost) prepare() error {
	b := h.b
	outage := func(how string) error {
		cmd := "systemctl start ocsp-blackhole.socket"
		if how == "refused" {
			cmd = "systemctl stop ocsp-responder.service"
		}
		if err := b.try(cmd); err != nil {
			return err
		}
		// Handshakes until mod_ssl has logged three failures (the audit's critical threshold
		// in 10 minutes); its error cache answers some handshakes without asking.
		for i := 0; ; i++ {
			if stapled, out := b.tryHandshake(); stapled {
				return fmt.Errorf("%s: stapled during the outage:\n%s", h.name, out)
			}
			if b.try(`[ "$(grep -c AH01941 /var/log/apache2/error_log)" -ge 3 ]`) == nil {
				return nil
			}
			if i == 10 {
				return fmt.Errorf("%s: fewer than 3 AH01941 after %d handshakes", h.name, i+1)
			}
		}
	}
	switch h.state {
	case "healthy":
		if stapled, out := b.tryHandshake(); !stapled {
			return fmt.Errorf("%s: no staple from a healthy host:\n%s", h.name, out)
		}
		return nil
	case "blackhole", "refused":
		return outage(h.state)
	case "remediated":
		if err := outage("refused"); err != nil {
			return err
		}
		return b.try(`stapling-agent remediate >/var/log/remediate.log 2>&1 && grep -q 'SSLUseStapling off' /etc/apache2/conf.d/includes/pre_virtualhost_global.conf`)
	case "paused":
		if err := outage("refused"); err != nil {
			return err
		}
		return b.try(`touch /etc/stapling-agent/pause`)
	}
	return fmt.Errorf("%s: unknown state %q", h.name, h.state)
}

// Issue 15, "Ansible, for real": audit.yml and enable.yml over SSH against ten booted hosts
// and one that is not there, with strategy free and ten forks.
func TestFleetOverSSH(t *testing.T) {
	needBed(t)
	for _, bin := range []string{"ansible-playbook", "ssh", "ssh-keygen", "unshare", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI: %s must be installed", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	deb := prepareBed(t)
	dir := t.TempDir()
	start := time.Now()

	// The one-off audit's static binary, as scripts/package.sh builds it.
	static := filepath.Join(dir, "stapling-agent")
	build := exec.Command("go", "build", "-trimpath", "-o", static, "./cmd/stapling-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}

	hosts := []*fleetHost{
		{name: "web01", state: "blackhole", want: "critical"},
		{name: "web02", state: "blackhole", want: "critical"},
		{name: "web03", state: "refused", want: "critical"},
		{name: "web04", state: "healthy", want: "ok"},
		{name: "web05", state: "healthy", want: "ok", binary: true},
		{name: "web06", state: "remediated", want: "ok"},
		{name: "web07", state: "refused", mustStaple: true, want: "critical"},
		{name: "web08", state: "refused", layout: "ea3", want: "critical", binary: true},
		{name: "web09", state: "healthy", layout: "none", want: "unknown"},
		{name: "web10", state: "paused", want: "critical"},
		{name: "web11", state: "none", want: "failed", binary: true},
	}
	for i, h := range hosts {
		h.addr = fmt.Sprintf("10.77.0.%d", 11+i)
	}
	net := newFleetNet(t)

	// Boot and prepare every host at once (each up is mostly waiting on its own boot).
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	for i, h := range hosts {
		if h.state == "none" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = startFleetHost(t, net, h, deb, key+".pub"); errs[i] == nil {
				errs[i] = h.prepare()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("10 hosts booted, installed (dpkg) and prepared in %s", time.Since(start).Round(100*time.Millisecond))

	// The inventory: every host by address, root with the test's key, host keys recorded in
	// the test's own known_hosts; the SSH control sockets in the test's directory.
	var inv strings.Builder
	inv.WriteString("[cpanel]\n")
	for _, h := range hosts {
		fmt.Fprintf(&inv, "%s ansible_host=%s", h.name, h.addr)
		if h.binary {
			fmt.Fprintf(&inv, " stapling_agent_binary=%s", static)
		}
		inv.WriteString("\n")
	}
	fmt.Fprintf(&inv, "\n[cpanel:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\nansible_python_interpreter=/usr/bin/python3\n", key)
	fmt.Fprintf(&inv, "ansible_ssh_common_args='-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=%s/known_hosts -o ConnectTimeout=5'\n", dir)
	invPath := filepath.Join(dir, "inventory")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// A socket path has at most 107 bytes: the control sockets get a short directory of
	// their own.
	cp, err := os.MkdirTemp("", "cp")
	if err != nil {
		t.Fatal(err)
	}
	// ControlPersist keeps a master ssh per host after the run: stop them, so no process
	// outlives the test.
	t.Cleanup(func() {
		for _, h := range hosts {
			_ = exec.Command("ssh", "-o", "ControlPath="+cp+"/%C", "-O", "exit", "root@"+h.addr).Run()
		}
		_ = os.RemoveAll(cp)
	})
	playbook := func(args ...string) (string, int, time.Duration) {
		t.Helper()
		cmd := net.command(append([]string{"ansible-playbook", "-i", invPath, "-f", "10"}, args...)...)
		cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "PYTHONDONTWRITEBYTECODE=1",
			"ANSIBLE_LOCAL_TEMP="+dir+"/tmp", "ANSIBLE_HOME="+dir+"/home", "ANSIBLE_RETRY_FILES_ENABLED=0",
			"ANSIBLE_SSH_CONTROL_PATH_DIR="+cp, "ANSIBLE_SSH_CONTROL_PATH=%(directory)s/%%C",
			"ANSIBLE_HOST_KEY_CHECKING=0")
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(t0)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("ansible-playbook: %v", err)
		}
		return string(out), code, took
	}

	// The audit: the package installed again through apt from the .deb (already there: no
	// change), the one-off binary on web05 and web08, the report on the control node.
	report := filepath.Join(dir, "report")
	var data []byte
	out, code, took := playbook("../packaging/ansible/audit.yml", "-e", "stapling_agent_deb="+deb,
		"-e", "stapling_agent_report_dir="+report)
	if code == 0 {
		t.Fatalf("audit.yml passed with an unknown layout and an unreachable host:\n%s", out)
	}
	data, err = os.ReadFile(filepath.Join(report, "fleet-report.json"))
	if err != nil {
		t.Fatalf("no report: %v\n%s", err, out)
	}
	var rep struct {
		Hosts, Answered []string
		NotAnswered     []string           `json:"not_answered"`
		HostSeconds     map[string]float64 `json:"host_seconds"`
		Audits          map[string]struct {
			Status, Summary string
			Layout          struct{ Kind string }
			Policy          struct{ Paused bool }
			Failures        struct {
				Total       int
				ByResponder map[string]int `json:"by_responder"`
			}
		}
		ByResponder []struct {
			Responder string
			HostCount int `json:"host_count"`
			Hosts     []struct{ Host string }
		} `json:"by_responder"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, data)
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.name)
	}
	if !slices.Equal(rep.Hosts, names) {
		t.Errorf("report covers %v, want %v", rep.Hosts, names)
	}
	if !slices.Equal(rep.NotAnswered, []string{"web11"}) {
		t.Errorf("not answered: %v, want [web11]\n%s", rep.NotAnswered, out)
	}
	for _, h := range hosts {
		a := rep.Audits[h.name]
		if a.Status != h.want {
			t.Errorf("%s (%s, %s): status %q, want %q: %s", h.name, h.state, h.layout, a.Status, h.want, a.Summary)
		}
	}
	// Remediated: stapling off by our block, the failures before it still counted.
	if a := rep.Audits["web06"]; !strings.Contains(a.Summary, "stapling is off (stapling-agent block present)") || a.Failures.Total < 3 {
		t.Errorf("web06 (remediated): %d failures, %q", a.Failures.Total, a.Summary)
	}
	if k := rep.Audits["web08"].Layout.Kind; k != "ea3" {
		t.Errorf("web08: layout %q, want ea3", k)
	}
	if !rep.Audits["web10"].Policy.Paused || rep.Audits["web01"].Policy.Paused {
		t.Errorf("paused: web10 %v (want true), web01 %v (want false)", rep.Audits["web10"].Policy.Paused, rep.Audits["web01"].Policy.Paused)
	}
	if !strings.Contains(rep.Audits["web11"].Summary, "unreachable") {
		t.Errorf("web11: %q, want unreachable", rep.Audits["web11"].Summary)
	}
	// One CA outage: the refused hosts' failures all name the same responder, in one row.
	failing := map[string]bool{}
	for _, h := range hosts {
		if h.state == "refused" || h.state == "remediated" || h.state == "paused" {
			failing[h.name] = true
		}
	}
	var row []string
	for _, r := range rep.ByResponder {
		if strings.Contains(r.Responder, "127.0.0.1:8080") {
			for _, h := range r.Hosts {
				row = append(row, h.Host)
			}
		}
	}
	for name := range failing {
		if !slices.Contains(row, name) {
			t.Errorf("by responder: %s missing from the responder's row %v", name, row)
		}
	}
	// Timings: every host that answered has its own wall time; the slowest is what the fleet
	// waits for (recorded in the README, not asserted: no timing targets in tests).
	var secs []float64
	for _, h := range hosts {
		s, ok := rep.HostSeconds[h.name]
		if !ok || s <= 0 {
			t.Errorf("%s: host_seconds %v", h.name, s)
		}
		if h.state != "none" {
			secs = append(secs, s)
		}
	}
	sort.Float64s(secs)
	if len(secs) > 0 {
		t.Logf("audit.yml over SSH, 11 hosts (10 booted, 1 unreachable), -f 10, strategy free: fleet %.1f s; per answering host min %.1f s, median %.1f s, max %.1f s; unreachable web11 %.1f s",
			took.Seconds(), secs[0], secs[len(secs)/2], secs[len(secs)-1], rep.HostSeconds["web11"])
	}
	csv, err := os.ReadFile(filepath.Join(report, "fleet-report.csv"))
	if err != nil || strings.Count(string(csv), "\n") != len(hosts)+1 {
		t.Errorf("fleet-report.csv: %v\n%s", err, csv)
	}
	// Nothing of the one-off audit stays on its hosts.
	for _, h := range hosts {
		if h.binary && h.b != nil {
			if left := h.b.sh(`find /tmp -name '*.stapling-agent*' 2>/dev/null`); left != "" {
				t.Errorf("%s: the copied binary stayed: %s", h.name, left)
			}
		}
	}

	// enable.yml over SSH, one host at a time, on the two healthy EA4 hosts: enforcement on,
	// the daemon running, nothing restarted (their responders answer).
	out, code, took = playbook("../packaging/ansible/enable.yml", "-e", "stapling_agent_enforce_hosts=web04:web05",
		"-e", "stapling_agent_serial=1")
	if code != 0 {
		t.Fatalf("enable.yml: exit %d\n%s", code, out)
	}
	t.Logf("enable.yml over SSH, 2 hosts, serial 1: %.1f s", took.Seconds())
	for _, h := range hosts[3:5] {
		if got := h.b.show("stapling-agent.service", "ActiveState"); got != "active" {
			t.Errorf("%s: stapling-agent.service %s after enable.yml", h.name, got)
		}
		if mode := h.b.sh(`grep '^mode:' /etc/stapling-agent/config.yaml`); mode != "mode: enforce" {
			t.Errorf("%s: %q after enable.yml", h.name, mode)
		}
		if r := h.b.restarts(); len(r) != 0 {
			t.Errorf("%s: Apache restarted by a healthy host's daemon: %v", h.name, r)
		}
	}
	// The other hosts were not touched.
	if mode := hosts[0].b.sh(`grep '^mode:' /etc/stapling-agent/config.yaml`); mode != "mode: dry-run" {
		t.Errorf("web01 changed by enable.yml for web04:web05: %q", mode)
	}
}
