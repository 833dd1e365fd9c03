package apacheconf

import (
	"os"
	"path/filepath"
	"testing"
)

// Where a vhost's exemption file goes: the vhost's own userdata include when it has one (any
// domain encoding), else cPanel's path from its account and ServerName (wildcards as
// wildcard_safe.), and an error when neither can name one. A reading with the file as an
// override sees it through the vhost's glob before it exists.
func TestExemptPath(t *testing.T) {
	root := t.TempDir()
	write := func(p, c string) {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(c), 0o644)
	}
	write("/etc/cpanel/ea4/is_ea4", "")
	os.MkdirAll(filepath.Join(root, "/etc/apache2/conf.d/includes"), 0o755)
	write("/etc/apache2/conf/httpd.conf", "ServerRoot /etc/apache2\nLoadModule ssl_module modules/mod_ssl.so\nSSLUseStapling on\n"+
		"<VirtualHost *:443>\nServerName wired.test\nSSLEngine on\nSuexecUserGroup u1 u1\n"+
		// cPanel's shared userdata includes come first: a file there would keep every vhost on.
		"IncludeOptional \"conf.d/userdata/ssl/*.conf\"\nIncludeOptional \"conf.d/userdata/ssl/2_4/*.conf\"\nIncludeOptional \"conf.d/userdata/ssl/2_4/u1/*.conf\"\n"+
		"IncludeOptional \"conf.d/userdata/ssl/2_4/u1/wired.test/*.conf\"\n</VirtualHost>\n"+
		"<VirtualHost *:443>\nServerName *.wild.test\nSSLEngine on\nSuexecUserGroup u2 u2\n# Include \"/etc/apache2/conf.d/userdata/ssl/2_4/u2/wildcard_safe.wild.test/*.conf\"\n</VirtualHost>\n"+
		"<VirtualHost *:443>\nServerName nobody.test\nSSLEngine on\n</VirtualHost>\n"+
		"<VirtualHost *:443>\nServerName ../x\nSSLEngine on\nSuexecUserGroup u3 u3\n</VirtualHost>\n")
	l, err := Detect(root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReadConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	ud := "/etc/apache2/conf.d/userdata/ssl/2_4/"
	for i, want := range []struct {
		path  string
		wired bool
		err   bool
	}{
		{ud + "u1/wired.test/" + ExemptFileName, true, false},
		{ud + "u2/wildcard_safe.wild.test/" + ExemptFileName, false, false},
		{"", false, true},
		{"", false, true},
	} {
		p, wired, err := ExemptPath(l, c, c.VHosts[i])
		if p != want.path || wired != want.wired || (err != nil) != want.err {
			t.Errorf("%s: %q %v %v, want %+v", c.VHosts[i].Name(), p, wired, err, want)
		}
	}
	// A host converted from EA3 keeps its userdata under ssl/2: the template uses it when
	// ssl/2_4 does not exist, and so does the exemption.
	os.MkdirAll(filepath.Join(root, "/etc/apache2/conf.d/userdata/ssl/2"), 0o755)
	if p, _, err := ExemptPath(l, c, c.VHosts[1]); err != nil || p != "/etc/apache2/conf.d/userdata/ssl/2/u2/wildcard_safe.wild.test/"+ExemptFileName {
		t.Fatalf("legacy ssl/2: %q %v", p, err)
	}
	after, err := ReadConfigWith(l, map[string][]byte{ud + "u1/wired.test/" + ExemptFileName: []byte("SSLUseStapling off\n")})
	if err != nil {
		t.Fatal(err)
	}
	if v := after.VHosts[0]; after.StaplingOf(v) || v.StaplingAt.File != ud+"u1/wired.test/"+ExemptFileName {
		t.Fatalf("override not read through the glob: %+v", v)
	}
	if !IsExemptContent(ExemptContent()) || IsExemptContent(append(ExemptContent(), '\n')) {
		t.Fatal("IsExemptContent")
	}
}
