package whm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		value      string
		present    bool
		err        string
	}{
		// cPanel's own spelling: Cpanel::EA4::Conf stores Apache's On/Off.
		{"cpanel on", `{"extendedstatus":"On","sslusestapling":"On","keepalive":"On"}`, On, true, ""},
		{"cpanel off, pretty", "{\n   \"sslusestapling\" : \"Off\",\n   \"sslprotocol\" : \"TLSv1.2\"\n}\n", Off, true, ""},
		{"lower case", `{"sslusestapling":"off"}`, Off, true, ""},
		{"upper case, blanks", `{"sslusestapling":"  ON "}`, On, true, ""},
		{"absent key", `{"keepalive":"On"}`, Unset, false, ""},
		{"empty object", `{}`, Unset, false, ""},
		{"empty string is unset (the template's .length test)", `{"sslusestapling":""}`, Unset, false, ""},
		{"null is unset", `{"sslusestapling":null}`, Unset, false, ""},
		{"key is case sensitive", `{"SSLUseStapling":"Off"}`, Unset, false, ""},
		{"last duplicate wins", `{"sslusestapling":"On","sslusestapling":"Off"}`, Off, true, ""},
		{"boolean", `{"sslusestapling":true}`, Unset, false, `invalid sslusestapling: true is not a string (want "On" or "Off")`},
		{"number", `{"sslusestapling":1}`, Unset, false, "invalid sslusestapling: 1 is not a string"},
		{"other word", `{"sslusestapling":"yes"}`, Unset, false, `invalid sslusestapling: "yes" (want "On" or "Off")`},
		{"long word is clipped", `{"sslusestapling":"` + strings.Repeat("x", 500) + `"}`, Unset, false, `"` + strings.Repeat("x", 40) + `..."`},
		{"multi-line value stays one line", `{"sslusestapling":"On\nSSLStaplingCache none"}`, Unset, false, `"On SSLStaplingCache none"`},
		{"not JSON", `sslusestapling=On`, Unset, false, "invalid JSON: invalid character 's'"},
		{"truncated", `{"sslusestapling":"On"`, Unset, false, "invalid JSON: unexpected end of JSON input"},
		{"empty file", ``, Unset, false, "invalid JSON: unexpected end of JSON input"},
		{"array", `["sslusestapling","On"]`, Unset, false, "invalid JSON: json: cannot unmarshal array"},
		{"null document", `null`, Unset, false, "invalid JSON: not an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, present, err := Parse([]byte(tc.conf))
			if v != tc.value || present != tc.present {
				t.Errorf("Parse = %q, %v; want %q, %v", v, present, tc.value, tc.present)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want it to contain %q", err, tc.err)
			case err != nil && (!errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "\n")):
				t.Errorf("error %q: want one line wrapping ErrInvalid", err)
			}
		})
	}
}

// writeConf writes ea4.conf under a fresh root and returns the root.
func writeConf(t *testing.T, content string) string {
	t.Helper()
	root := t.TempDir()
	p := filepath.Join(root, ConfFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestRead(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		s := Read(writeConf(t, `{"sslusestapling" : "On"}`))
		if s.Err != nil || s.Value != On || !s.Present || s.File != ConfFile || s.Shown() != "On" {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("off", func(t *testing.T) {
		s := Read(writeConf(t, `{"sslusestapling" : "Off"}`))
		if s.Err != nil || s.Value != Off || !s.Present || s.Shown() != "Off" {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("no ea4.conf: WHM's default", func(t *testing.T) {
		s := Read(t.TempDir())
		if s.Err != nil || s.Value != Unset || s.Present || s.Shown() != "On" {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("relative symlink to a regular file is followed", func(t *testing.T) {
		root := writeConf(t, "")
		p := filepath.Join(root, ConfFile)
		os.Remove(p)
		if err := os.WriteFile(p+".real", []byte(`{"sslusestapling":"Off"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("ea4.conf.real", p); err != nil {
			t.Fatal(err)
		}
		if s := Read(root); s.Err != nil || s.Value != Off {
			t.Fatalf("%+v", s)
		}
	})

	// Hostile or broken files: each one error, one line, naming the host path (never the
	// path under --root), and the value says nothing.
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, p string)
		want  string
		is    error
	}{
		{"invalid JSON", func(t *testing.T, p string) { write(t, p, "{\"sslusestapling\": On}") }, ConfFile + ": invalid JSON: invalid character 'O'", ErrInvalid},
		{"invalid value", func(t *testing.T, p string) { write(t, p, `{"sslusestapling":"enabled"}`) }, ConfFile + `: invalid sslusestapling: "enabled"`, ErrInvalid},
		{"huge file", func(t *testing.T, p string) {
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			// Sparse: 64 MiB of apparent size, no disk used; the cap is 1 MiB.
			if err := f.Truncate(64 << 20); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, ConfFile + " is 64 MiB, over the size limit of 1 MiB", apacheconf.ErrTooLarge},
		{"FIFO", func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, ConfFile + " is a named pipe (FIFO)", apacheconf.ErrNotRegular},
		{"symlink to a FIFO", func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p+".fifo", 0o644); err != nil {
				t.Fatal(err)
			}
			link(t, "ea4.conf.fifo", p)
		}, ConfFile + " is a named pipe (FIFO)", apacheconf.ErrNotRegular},
		{"symlink to /dev/zero", func(t *testing.T, p string) { link(t, "/dev/zero", p) }, ConfFile + " is a character device", apacheconf.ErrNotRegular},
		{"directory", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, ConfFile + " is a directory", apacheconf.ErrNotRegular},
		{"dangling symlink", func(t *testing.T, p string) { link(t, "gone.conf", p) }, "read " + ConfFile + ": a symlink to a missing file", os.ErrNotExist},
		{"symlink loop", func(t *testing.T, p string) { link(t, "ea4.conf", p) }, "read " + ConfFile + ": too many levels of symbolic links", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, ConfFile)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, p)
			s := Read(root)
			if s.Err == nil {
				t.Fatalf("no error: %+v", s)
			}
			msg := s.Err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, root) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line containing %q, without the root", msg, tc.want)
			}
			if tc.is != nil && !errors.Is(s.Err, tc.is) {
				t.Errorf("error %q does not wrap %v", msg, tc.is)
			}
			if s.Value != Unset || s.Present || s.Shown() != "unknown" {
				t.Errorf("an unreadable ea4.conf must say nothing: %+v shown %s", s, s.Shown())
			}
		})
	}

	t.Run("unreadable file", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads a 0000 file")
		}
		root := writeConf(t, `{"sslusestapling":"On"}`)
		os.Chmod(filepath.Join(root, ConfFile), 0)
		s := Read(root)
		if s.Err == nil || s.Err.Error() != "read "+ConfFile+": permission denied" {
			t.Fatalf("%+v", s)
		}
	})
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func TestCompare(t *testing.T) {
	const (
		inc   = "/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"
		httpd = "/etc/apache2/conf/httpd.conf"
	)
	on, off, unset := Setting{Value: On, Present: true}, Setting{Value: Off, Present: true}, Setting{}
	broken := Setting{Err: errors.New("read " + ConfFile + ": invalid JSON")}
	ourBlock := Effective{State: apacheconf.StaplingOff, GlobalAt: inc + ":4", ManagedBlock: true, Include: inc, HTTPDConf: httpd}
	for _, tc := range []struct {
		name string
		whm  Setting
		eff  Effective
		want string // "" means no difference
	}{
		{"on and on", on, Effective{State: apacheconf.StaplingOn, GlobalAt: httpd + ":9", Include: inc, HTTPDConf: httpd}, ""},
		{"unset shows On: agrees with on", unset, Effective{State: apacheconf.StaplingOn, GlobalAt: httpd + ":9"}, ""},
		{"off and off", off, Effective{State: apacheconf.StaplingOff, GlobalAt: httpd + ":9", HTTPDConf: httpd}, ""},
		{"off, and our block too", off, ourBlock, ""},
		{"unknown effective: nothing to say", on, Effective{State: apacheconf.StaplingUnknown}, ""},
		{"unreadable ea4.conf: nothing to say", broken, ourBlock, ""},

		{"on, our block turns it off", on, ourBlock,
			"WHM shows SSL Use Stapling On, but stapling-agent's block in pre_virtualhost_global.conf (read after the template's global block) turns it off; WHM will keep showing On, and changing the switch has no effect, until `stapling-agent revert` removes the block"},
		{"unset, our block turns it off", unset, ourBlock,
			"WHM shows SSL Use Stapling On, but stapling-agent's block in pre_virtualhost_global.conf"},
		{"on, the admin's own off in the include", on, Effective{State: apacheconf.StaplingOff, GlobalAt: inc + ":2", Include: inc, HTTPDConf: httpd},
			"WHM shows SSL Use Stapling On, but SSLUseStapling off at " + inc + ":2 (read after the template's global block) turns it off; WHM does not know about that directive"},
		{"on, our block present but a later global off elsewhere wins", on, Effective{State: apacheconf.StaplingOff, GlobalAt: "/etc/apache2/conf.d/zz.conf:1", ManagedBlock: true, Include: inc, HTTPDConf: httpd},
			"SSLUseStapling off at /etc/apache2/conf.d/zz.conf:1"},
		{"on, no global directive at all", on, Effective{State: apacheconf.StaplingOff, Include: inc, HTTPDConf: httpd},
			"WHM shows SSL Use Stapling On, but no SSLUseStapling is set at global scope, so Apache's default (off) applies"},
		{"on, our block, two vhosts turn it back on", on, Effective{State: apacheconf.StaplingMixed, GlobalAt: inc + ":4", ManagedBlock: true, Include: inc, HTTPDConf: httpd, VHostsOn: 2},
			"until `stapling-agent revert` removes the block; 2 SSL vhosts turn it back on with their own SSLUseStapling on"},
		{"on, mixed, uncounted", on, Effective{State: apacheconf.StaplingMixed, GlobalAt: inc + ":4", ManagedBlock: true, Include: inc},
			"; some SSL vhosts turn it back on"},

		{"off, httpd.conf not rebuilt", off, Effective{State: apacheconf.StaplingOn, GlobalAt: httpd + ":9", Include: inc, HTTPDConf: httpd},
			"WHM shows SSL Use Stapling Off, but httpd.conf still says SSLUseStapling on (" + httpd + ":9): it was not rebuilt from WHM's setting"},
		{"off, a conf.d file turns it on globally", off, Effective{State: apacheconf.StaplingOn, GlobalAt: "/etc/apache2/conf.d/stapling.conf:1", Include: inc, HTTPDConf: httpd},
			"WHM shows SSL Use Stapling Off, but SSLUseStapling on at /etc/apache2/conf.d/stapling.conf:1 (read after the template's global block) turns it back on for every SSL vhost"},
		{"off, every vhost turns it on", off, Effective{State: apacheconf.StaplingOn, Include: inc, HTTPDConf: httpd},
			"WHM shows SSL Use Stapling Off, but every SSL vhost turns stapling on with its own SSLUseStapling on"},
		{"off, one vhost include turns it on", off, Effective{State: apacheconf.StaplingMixed, GlobalAt: httpd + ":9", Include: inc, HTTPDConf: httpd, VHostsOn: 1},
			"WHM shows SSL Use Stapling Off and stapling is off globally, but 1 SSL vhost turns it back on with its own SSLUseStapling on (per-vhost includes or conf.d); WHM's switch does not reach them"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			differs, why := Compare(tc.whm, tc.eff)
			if differs != (tc.want != "") || !strings.Contains(why, tc.want) || (tc.want == "" && why != "") {
				t.Fatalf("Compare = %v, %q\nwant %q", differs, why, tc.want)
			}
			if strings.ContainsAny(why, "\n\r") {
				t.Fatalf("not one line: %q", why)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"sslusestapling":"On"}`, `{"sslusestapling":"off"}`, `{}`, `null`, `{"sslusestapling":7}`, "{\"sslusestapling\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, present, err := Parse(data)
		if err != nil && (v != Unset || present || strings.Contains(err.Error(), "\n")) {
			t.Fatalf("error %q with value %q present %v", err, v, present)
		}
		if v != On && v != Off && v != Unset {
			t.Fatalf("value %q", v)
		}
		if present != (v != Unset) {
			t.Fatalf("present %v with value %q", present, v)
		}
	})
}
