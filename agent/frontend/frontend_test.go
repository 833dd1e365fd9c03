package frontend

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func touch(t *testing.T, root string, hostPaths ...string) {
	t.Helper()
	for _, p := range hostPaths {
		writeFiles(t, root, map[string]string{strings.TrimPrefix(p, "/"): ""})
	}
}

func TestDetectFakeProc(t *testing.T) {
	cases := []struct {
		name        string
		setup       func(t *testing.T, root string)
		server      Server
		source      Source
		apachePorts []int
		evidence    string
	}{
		{"ea-nginx in front", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 812, 443, "/usr/sbin/nginx"))
			must(t, WriteFakeListener(root, 812, 80, "/usr/sbin/nginx"))
			must(t, WriteFakeListener(root, 900, 444, "/usr/sbin/httpd"))
			must(t, WriteFakeListener(root, 900, 81, "/usr/sbin/httpd"))
			touch(t, root, eaNginxConf)
		}, ServerNginx, SourceProc, []int{81, 444}, "tcp 0.0.0.0:443 LISTEN owned by pid 812 /usr/sbin/nginx"},
		{"apache alone", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 900, 443, "/usr/sbin/httpd"))
		}, ServerApache, SourceProc, []int{443}, "pid 900 /usr/sbin/httpd"},
		{"litespeed in httpd's place", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 700, 443, "/usr/sbin/httpd"))
			touch(t, root, lswsApacheBackup)
			touch(t, root, lswsDir+"bin/lshttpd")
		}, ServerLiteSpeed, SourceProc, []int{}, "marker /usr/sbin/httpd_ls_bak"},
		{"httpd_ls_bak left behind after switching back to Apache", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 700, 443, "/usr/sbin/httpd"))
			touch(t, root, lswsApacheBackup)
		}, ServerApache, SourceProc, []int{443}, "tcp 0.0.0.0:443 LISTEN owned by pid 700 /usr/sbin/httpd"},
		{"Apache beside another server on 443: Apache answers some visitors itself", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 700, 443, "/usr/sbin/httpd"))
			must(t, WriteFakeListener(root, 5, 443, "/usr/sbin/haproxy"))
		}, ServerApache, SourceProc, []int{443}, "owned by pid 700 /usr/sbin/httpd"},
		{"litespeed binary", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 701, 443, "/usr/local/lsws/bin/litespeed"))
		}, ServerLiteSpeed, SourceProc, []int{}, "/usr/local/lsws/bin/litespeed"},
		{"haproxy", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 5, 443, "/usr/sbin/haproxy"))
		}, ServerOther, SourceProc, []int{}, "haproxy"},
		{"owner hidden, markers decide", func(t *testing.T, root string) {
			must(t, WriteFakeListener(root, 812, 443, "/usr/sbin/nginx"))
			must(t, os.RemoveAll(filepath.Join(root, "proc", "812")))
			touch(t, root, eaNginxSettings)
			writeFiles(t, root, map[string]string{"var/cpanel/cpanel.config": "apache_port=0.0.0.0:81\napache_ssl_port=0.0.0.0:444\n"})
		}, ServerNginx, SourceMarkers, []int{81, 444}, "owner not visible"},
		{"no proc, engintron", func(t *testing.T, root string) {
			touch(t, root, engintronDir+"/engintron.sh")
			writeFiles(t, root, map[string]string{"var/cpanel/cpanel.config": "apache_ssl_port=0.0.0.0:8443\n"})
		}, ServerNginx, SourceMarkers, []int{8443}, "marker /usr/local/src/engintron"},
		{"no proc, apache on 443", func(t *testing.T, root string) {
			writeFiles(t, root, map[string]string{"var/cpanel/cpanel.config": "apache_ssl_port=0.0.0.0:443\n"})
		}, ServerApache, SourceMarkers, []int{443}, "apache_ssl_port=443"},
		{"nothing tells", func(t *testing.T, root string) {}, ServerUnknown, SourceNone, []int{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			c.setup(t, root)
			fe, err := Detect(context.Background(), root, nil)
			if err != nil {
				t.Fatal(err)
			}
			if fe.Server != c.server || fe.Source != c.source || !slices.Equal(fe.ApachePorts, c.apachePorts) {
				t.Errorf("got server %s source %s apache_ports %v, want %s %s %v\n%+v", fe.Server, fe.Source, fe.ApachePorts, c.server, c.source, c.apachePorts, fe)
			}
			if c.evidence != "" && !strings.Contains(strings.Join(fe.Evidence, "\n"), c.evidence) {
				t.Errorf("evidence %q lacks %q", fe.Evidence, c.evidence)
			}
			if fe.Server == ServerUnknown && fe.Reason == "" {
				t.Error("unknown without a reason")
			}
		})
	}
}

// TestDetectRealProc reads this machine's /proc: the test process listens on a port
// given as an extra HTTPS port, and Detect must name it.
func TestDetectRealProc(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc")
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "tcp6" {
				host = "[::1]"
			}
			ln, err := net.Listen(network, host+":0")
			if err != nil {
				t.Skip(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			fe, err := Detect(context.Background(), "/", []int{port})
			if err != nil {
				t.Fatal(err)
			}
			exe, _ := os.Executable()
			want := fmt.Sprintf("tcp %s LISTEN owned by pid %d %s", ln.Addr(), os.Getpid(), exe)
			if !slices.Contains(fe.Evidence, want) {
				t.Errorf("evidence %q lacks %q (%+v)", fe.Evidence, want, fe)
			}
			if !slices.Equal(fe.HTTPSPorts, []int{443, port}) {
				t.Errorf("https_ports %v", fe.HTTPSPorts)
			}
		})
	}
}

func TestParseNetTCPLine(t *testing.T) {
	s, ok := parseNetTCPLine("   0: 0100007F:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0", false)
	if !ok || s.addr != "127.0.0.1:443" || s.inode != 4242 {
		t.Errorf("v4: %+v %v", s, ok)
	}
	s, ok = parseNetTCPLine("   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1", true)
	if !ok || s.addr != "[::1]:443" {
		t.Errorf("v6: %+v %v", s, ok)
	}
	if _, ok := parseNetTCPLine("   1: 0100007F:01BB 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1", false); ok {
		t.Error("ESTABLISHED socket taken for a listener")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
