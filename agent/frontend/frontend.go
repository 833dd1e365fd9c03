// Package frontend tells who answers on the host's HTTPS ports (FACTS.md section 12) and reads
// what that front end does about OCSP stapling when it is NGINX: its configuration
// (ReadNginxConfig) and its error log's OCSP lines (ClassifyNginx, ScanNginxLog).
//
// Detect reads listening sockets and their owners from /proc under the root, as the kernel
// shows them, and falls back to package and configuration markers when /proc is missing or
// hides other processes' descriptors (a container, hidepid=2). A fake host describes a
// listener with the minimal shape Detect reads (WriteFakeListener writes exactly this):
//
//	ROOT/proc/net/tcp        the kernel's header line, then one line per socket:
//	                         "   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 ..."
//	                         (local address as hex in host byte order, ":" port as 4 hex
//	                         digits, state 0A = LISTEN, the inode in the tenth field);
//	                         ROOT/proc/net/tcp6 has the same shape with 32-digit addresses
//	ROOT/proc/PID/fd/N       a symlink whose target is "socket:[4242]"
//	ROOT/proc/PID/exe        a symlink whose target is the binary's host path, "/usr/sbin/nginx"
//	                         (only read with readlink, never followed)
//	ROOT/proc/PID/comm       the process name and a newline, "nginx\n" (optional)
//
// Nothing here runs a command: which binary is which is decided from paths and names alone.
package frontend

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// Server is what answers on the HTTPS ports.
type Server string

const (
	ServerApache    Server = "apache"
	ServerNginx     Server = "nginx"
	ServerLiteSpeed Server = "litespeed"
	ServerOther     Server = "other"   // something else listens (haproxy, a CDN agent, ...)
	ServerUnknown   Server = "unknown" // nothing tells; Frontend.Reason says why
)

// Source is how the answer was found.
type Source string

const (
	SourceProc    Source = "proc"    // a listening socket and its owning process
	SourceMarkers Source = "markers" // installed packages and cPanel's tweak settings only
	SourceNone    Source = "none"
)

// Frontend is what Detect found. It goes into the audit's JSON as "frontend".
type Frontend struct {
	Server Server `json:"server"`
	Source Source `json:"source"`
	// Reason says why Server is unknown, or what weakened the answer.
	Reason string `json:"reason,omitempty"`
	// Evidence is for people: the sockets, their owners and the markers that decided.
	Evidence []string `json:"evidence"`
	// ApachePorts are the ports Apache itself listens on (from /proc), or cPanel's
	// apache_port/apache_ssl_port tweak settings when /proc did not tell.
	ApachePorts []int `json:"apache_ports"`
	HTTPSPorts  []int `json:"https_ports"`
	// Listeners are the listening sockets on the HTTPS ports and Apache's own.
	Listeners []Listener `json:"listeners,omitempty"`
}

// Listener is one listening TCP socket and, when visible, its owner.
type Listener struct {
	Addr   string `json:"addr"` // "0.0.0.0:443", "[::]:443"
	Port   int    `json:"port"`
	PID    int    `json:"pid,omitempty"`
	Exe    string `json:"exe,omitempty"`  // host path of the binary, from /proc/PID/exe
	Comm   string `json:"comm,omitempty"` // /proc/PID/comm
	Server Server `json:"server"`
}

// Limits. /proc is the kernel's, but under --root it is a tree anyone may have built.
const (
	maxProcLine  = 4096    // a /proc/net/tcp line is 150 bytes
	maxListeners = 4096    // listening sockets kept; a host has dozens
	maxProcs     = 1 << 17 // processes looked at (pid_max's usual default is 4M, real hosts run thousands)
	maxFDs       = 1 << 20 // descriptors looked at over all processes
	maxEvidence  = 32
)

// Host paths of the markers (FACTS.md section 12; CpanelInc/ea-nginx's spec file list;
// engintron.sh's APP_PATH; LiteSpeed's cPanel integration keeps Apache as httpd_ls_bak).
const (
	cpanelConfig      = "/var/cpanel/cpanel.config"
	eaNginxConf       = "/etc/nginx/conf.d/ea-nginx.conf"
	eaNginxSettings   = "/etc/nginx/ea-nginx/settings.json"
	eaNginxScript     = "/usr/local/cpanel/scripts/ea-nginx"
	engintronDir      = "/usr/local/src/engintron"
	engintronWHM      = "/usr/local/cpanel/whostmgr/docroot/cgi/addon_engintron.cgi"
	lswsBin           = "/usr/local/lsws/bin/lshttpd"
	lswsBin2          = "/usr/local/lsws/bin/litespeed"
	lswsApacheBackup  = "/usr/sbin/httpd_ls_bak"
	cpanelHTTPD       = "/usr/sbin/httpd"
	lswsDir           = "/usr/local/lsws/"
	deletedExeSuffix  = " (deleted)" // /proc/PID/exe of a binary replaced by an update
	defaultHTTPSPort  = 443
	tcpListen         = "0A"
	socketLinkPrefix  = "socket:["
	procNetTCP        = "/proc/net/tcp"
	procNetTCP6       = "/proc/net/tcp6"
	cpanelConfigLimit = apacheconf.MaxSmallFile
)

// Detect finds what listens on 443 and on the extra HTTPS ports under root ("" or "/": this
// host). Partial failure is data: unreadable parts of /proc show in Reason and Evidence, and
// markers take over. The error is only ctx's.
func Detect(ctx context.Context, root string, ports []int) (*Frontend, error) {
	if root == "" {
		root = "/"
	}
	fe := &Frontend{Server: ServerUnknown, Source: SourceNone, HTTPSPorts: httpsPorts(ports), ApachePorts: []int{}, Evidence: []string{}}
	socks, procErr := readListeners(ctx, root)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	owners := map[uint64]owner{}
	if procErr == nil && len(socks) > 0 {
		var err error
		owners, err = findOwners(ctx, root, socks)
		if err != nil {
			return nil, err
		}
	}
	decided := false
	if procErr == nil {
		decided = fe.fromProc(root, socks, owners)
	} else {
		fe.Reason = procErr.Error()
	}
	fe.fromMarkers(root, decided)
	if len(fe.Evidence) > maxEvidence {
		fe.Evidence = append(fe.Evidence[:maxEvidence-1], fmt.Sprintf("... %d more", len(fe.Evidence)-maxEvidence+1))
	}
	return fe, nil
}

func httpsPorts(extra []int) []int {
	out := []int{defaultHTTPSPort}
	for _, p := range extra {
		if p > 0 && p < 65536 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

type socket struct {
	addr  string
	port  int
	inode uint64
}

type owner struct {
	pid        int
	exe, comm  string
	server     Server
	unreadable bool
}

// readListeners reads the LISTEN sockets of ROOT/proc/net/tcp and tcp6. A missing tcp6 is
// fine (IPv6 disabled); a missing tcp means there is no /proc to read.
func readListeners(ctx context.Context, root string) ([]socket, error) {
	var out []socket
	for _, p := range []string{procNetTCP, procNetTCP6} {
		socks, err := readNetTCP(ctx, apacheconf.HostPath(root, p), p == procNetTCP6)
		if err != nil {
			if p == procNetTCP6 && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		out = append(out, socks...)
		if len(out) > maxListeners {
			out = out[:maxListeners]
		}
	}
	return out, nil
}

func readNetTCP(ctx context.Context, file string, v6 bool) ([]socket, error) {
	f, _, err := apacheconf.OpenRegular(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, maxProcLine), maxProcLine)
	var out []socket
	for n := 0; sc.Scan(); n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if n == 0 {
			continue // header
		}
		if s, ok := parseNetTCPLine(sc.Text(), v6); ok && len(out) < maxListeners {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// parseNetTCPLine reads one line of /proc/net/tcp{,6} (proc_net(5)): "sl local rem st
// tx:rx tr:when retrnsmt uid timeout inode ...", keeping LISTEN sockets only.
func parseNetTCPLine(line string, v6 bool) (socket, bool) {
	f := strings.Fields(line)
	if len(f) < 10 || f[3] != tcpListen {
		return socket{}, false
	}
	hexAddr, hexPort, ok := strings.Cut(f[1], ":")
	if !ok || len(hexPort) != 4 {
		return socket{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return socket{}, false
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil || inode == 0 {
		return socket{}, false
	}
	ip, ok := procIP(hexAddr, v6)
	if !ok {
		return socket{}, false
	}
	return socket{addr: net.JoinHostPort(ip.String(), strconv.Itoa(int(port))), port: int(port), inode: inode}, true
}

// procIP decodes the kernel's hex address: each 32-bit word is printed in host byte order,
// little-endian on the x86-64 and arm64 hosts cPanel runs on.
func procIP(h string, v6 bool) (net.IP, bool) {
	want := 8
	if v6 {
		want = 32
	}
	b, err := hex.DecodeString(h)
	if len(h) != want || err != nil {
		return nil, false
	}
	for w := 0; w+4 <= len(b); w += 4 {
		b[w], b[w+1], b[w+2], b[w+3] = b[w+3], b[w+2], b[w+1], b[w]
	}
	return net.IP(b), true
}

// findOwners walks ROOT/proc/PID/fd looking for the sockets' inodes, in PID order, and
// stops once every socket has an owner. Directories it may not read are skipped: in a
// container or under hidepid they are most of them, and the caller then falls back.
func findOwners(ctx context.Context, root string, socks []socket) (map[uint64]owner, error) {
	want := map[uint64]bool{}
	for _, s := range socks {
		want[s.inode] = true
	}
	owners := map[uint64]owner{}
	procDir := apacheconf.HostPath(root, "/proc")
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return owners, nil
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 && len(pids) < maxProcs {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	fds := 0
	for _, pid := range pids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(owners) == len(want) || fds >= maxFDs {
			break
		}
		fdDir := filepath.Join(procDir, strconv.Itoa(pid), "fd")
		names, err := readDirNames(fdDir, maxFDs-fds)
		if err != nil {
			continue
		}
		fds += len(names)
		for _, n := range names {
			target, err := os.Readlink(filepath.Join(fdDir, n))
			if err != nil || !strings.HasPrefix(target, socketLinkPrefix) || !strings.HasSuffix(target, "]") {
				continue
			}
			inode, err := strconv.ParseUint(target[len(socketLinkPrefix):len(target)-1], 10, 64)
			if err != nil || !want[inode] {
				continue
			}
			if _, seen := owners[inode]; !seen {
				owners[inode] = describe(root, procDir, pid)
			}
		}
	}
	return owners, nil
}

func readDirNames(dir string, limit int) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(max(limit, 1))
}

// describe reads the owner's binary and name and classifies it.
func describe(root, procDir string, pid int) owner {
	o := owner{pid: pid}
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	exe, err := os.Readlink(filepath.Join(dir, "exe"))
	if err == nil {
		o.exe = strings.TrimSuffix(exe, deletedExeSuffix)
	} else {
		o.unreadable = true
	}
	if b, err := apacheconf.ReadFile(filepath.Join(dir, "comm"), 64); err == nil {
		o.comm = strings.TrimSpace(string(b))
	}
	o.server = classifyBinary(root, o.exe, o.comm)
	return o
}

// classifyBinary names the server a process runs from its binary's host path and its name.
// On cPanel, LiteSpeed replaces /usr/sbin/httpd and keeps Apache's as httpd_ls_bak, so a
// process running /usr/sbin/httpd is LiteSpeed while that backup exists.
func classifyBinary(root, exe, comm string) Server {
	if strings.HasPrefix(exe, lswsDir) {
		return ServerLiteSpeed
	}
	name := path.Base(exe)
	if exe == "" {
		name = comm
	}
	switch name {
	case "lshttpd", "litespeed", "openlitespeed":
		return ServerLiteSpeed
	case "nginx", "nginx-debug":
		return ServerNginx
	case "httpd", "apache2", "httpd.worker", "httpd.event":
		// Both: a backup left behind after switching back to Apache is not LiteSpeed.
		if exe == cpanelHTTPD && exists(root, lswsApacheBackup) && lswsInstalled(root) {
			return ServerLiteSpeed
		}
		return ServerApache
	case "":
		return ServerUnknown
	}
	switch comm {
	case "lshttpd", "litespeed", "openlitespeed":
		return ServerLiteSpeed
	}
	return ServerOther
}

// lswsInstalled: LiteSpeed's own binary is there.
func lswsInstalled(root string) bool {
	return exists(root, lswsDir+"bin/lshttpd") || exists(root, lswsDir+"bin/litespeed")
}

func exists(root, hostPath string) bool {
	_, err := os.Lstat(apacheconf.HostPath(root, hostPath))
	return err == nil
}

// fromProc decides from the sockets; it reports whether it could.
func (fe *Frontend) fromProc(root string, socks []socket, owners map[uint64]owner) bool {
	apache := map[int]bool{}
	var https []Listener
	hidden := 0
	for _, s := range socks {
		o, found := owners[s.inode]
		l := Listener{Addr: s.addr, Port: s.port, Server: ServerUnknown}
		if found {
			l.PID, l.Exe, l.Comm, l.Server = o.pid, o.exe, o.comm, o.server
			if o.server == ServerApache {
				apache[s.port] = true
			}
		}
		isHTTPS := slices.Contains(fe.HTTPSPorts, s.port)
		if !isHTTPS && !(found && o.server == ServerApache) {
			continue
		}
		if slices.ContainsFunc(fe.Listeners, func(x Listener) bool { return x.Addr == l.Addr }) {
			continue
		}
		fe.Listeners = append(fe.Listeners, l)
		if !isHTTPS {
			continue
		}
		https = append(https, l)
		if found {
			bin := o.exe
			if bin == "" {
				bin = "(exe unreadable) " + o.comm
			}
			fe.Evidence = append(fe.Evidence, fmt.Sprintf("tcp %s LISTEN owned by pid %d %s", s.addr, o.pid, bin))
		} else {
			hidden++
			fe.Evidence = append(fe.Evidence, fmt.Sprintf("tcp %s LISTEN, owner not visible (socket inode %d)", s.addr, s.inode))
		}
	}
	for p := range apache {
		fe.ApachePorts = append(fe.ApachePorts, p)
	}
	slices.Sort(fe.ApachePorts)
	if len(https) == 0 {
		fe.Reason = fmt.Sprintf("no socket listens on port %s in %s", joinInts(fe.HTTPSPorts), procNetTCP)
		return false
	}
	// The first HTTPS port that has a visible owner decides (443 comes first). Where Apache
	// listens on it too (on some addresses, beside another server on others), Apache answers
	// some visitors itself, and a stalled handshake there is an outage: Apache wins, and the
	// agent acts as it always has.
	for _, port := range fe.HTTPSPorts {
		var servers []Server
		for _, l := range https {
			if l.Port == port && l.Server != ServerUnknown {
				servers = append(servers, l.Server)
			}
		}
		if len(servers) == 0 {
			continue
		}
		fe.Server = servers[0]
		if slices.Contains(servers, ServerApache) {
			fe.Server = ServerApache
		}
		fe.Source = SourceProc
		if hidden > 0 {
			fe.Reason = fmt.Sprintf("%d listening socket(s) on the HTTPS ports have no visible owner", hidden)
		}
		return true
	}
	fe.Reason = fmt.Sprintf("sockets listen on port %s but no owner is visible under /proc (a container or hidepid hides other processes' descriptors)", joinInts(fe.HTTPSPorts))
	return false
}

// fromMarkers adds the markers to the evidence and, when /proc did not decide, decides from
// them.
func (fe *Frontend) fromMarkers(root string, decided bool) {
	var found []string
	mark := func(p string) bool {
		if exists(root, p) {
			found = append(found, p)
			fe.Evidence = append(fe.Evidence, "marker "+p)
			return true
		}
		return false
	}
	eaNginx := mark(eaNginxConf)
	eaNginx = mark(eaNginxSettings) || eaNginx
	eaNginx = mark(eaNginxScript) || eaNginx
	engintron := mark(engintronDir)
	engintron = mark(engintronWHM) || engintron
	lsws := mark(lswsBin)
	lsws = mark(lswsBin2) || lsws
	lsSwitched := mark(lswsApacheBackup)

	httpPort, sslPort, cfgErr := readApachePorts(root)
	if cfgErr != nil && !errors.Is(cfgErr, fs.ErrNotExist) {
		fe.Evidence = append(fe.Evidence, "unreadable "+cpanelConfig+": "+cfgErr.Error())
	}
	if sslPort > 0 {
		fe.Evidence = append(fe.Evidence, fmt.Sprintf("%s apache_ssl_port=%d", cpanelConfig, sslPort))
	}
	if httpPort > 0 {
		fe.Evidence = append(fe.Evidence, fmt.Sprintf("%s apache_port=%d", cpanelConfig, httpPort))
	}
	if decided {
		return
	}
	if len(fe.ApachePorts) == 0 {
		for _, p := range []int{sslPort, httpPort} {
			if p > 0 && !slices.Contains(fe.ApachePorts, p) {
				fe.ApachePorts = append(fe.ApachePorts, p)
			}
		}
		slices.Sort(fe.ApachePorts)
	}
	why := fe.Reason
	if why != "" {
		why += "; "
	}
	apacheOff443 := sslPort > 0 && !slices.Contains(fe.HTTPSPorts, sslPort)
	switch {
	case lsws && lsSwitched:
		fe.Server, fe.Source = ServerLiteSpeed, SourceMarkers
		fe.Reason = why + "LiteSpeed is installed and has replaced " + cpanelHTTPD
	case (eaNginx || engintron) && (apacheOff443 || sslPort == 0):
		fe.Server, fe.Source = ServerNginx, SourceMarkers
		fe.Reason = why + "an NGINX front end is installed"
		if apacheOff443 {
			fe.Reason += fmt.Sprintf(" and Apache's SSL port is %d", sslPort)
		}
	case eaNginx || engintron:
		fe.Server, fe.Source = ServerUnknown, SourceMarkers
		fe.Reason = why + fmt.Sprintf("an NGINX front end is installed but Apache's SSL port is %d: cannot tell which one answers", sslPort)
	case sslPort > 0 && !apacheOff443 && !lsws:
		fe.Server, fe.Source = ServerApache, SourceMarkers
		fe.Reason = why + fmt.Sprintf("no front end is installed and Apache's SSL port is %d", sslPort)
	default:
		fe.Server = ServerUnknown
		if len(found) == 0 {
			fe.Reason = why + "no front-end marker and no apache_ssl_port in " + cpanelConfig
		} else {
			fe.Reason = why + "markers (" + strings.Join(found, ", ") + ") do not say who answers"
		}
	}
}

// readApachePorts reads cPanel's tweak settings apache_port and apache_ssl_port
// ("0.0.0.0:444", key=value lines) from cpanel.config; 0 where absent.
func readApachePorts(root string) (httpPort, sslPort int, err error) {
	b, err := apacheconf.ReadFile(apacheconf.HostPath(root, cpanelConfig), cpanelConfigLimit)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "apache_port":
			httpPort = portOf(v)
		case "apache_ssl_port":
			sslPort = portOf(v)
		}
	}
	return httpPort, sslPort, nil
}

func portOf(v string) int {
	v = strings.TrimSpace(v)
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	p, err := strconv.Atoi(v)
	if err != nil || p <= 0 || p > 65535 {
		return 0
	}
	return p
}

func joinInts(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}
