// Package whm reads WHM's own OCSP stapling switch and says, in one sentence for the operator,
// when it and the stapling Apache really applies disagree.
//
// WHM > Apache Configuration > Global Configuration > "SSL Use Stapling" (default On) is the
// key sslusestapling of /etc/cpanel/ea4/ea4.conf, a flat JSON object that cPanel edits only
// through its Perl class Cpanel::EA4::Conf (FACTS.md section 13). The EA4 template
// ea4_main.default writes it into httpd.conf's global SSL block verbatim, and On when it is
// empty or absent (ea-apache2-config commit 660847e, "Allow SSLUseStapling to be configured in
// ea4.conf"):
//
//	SSLUseStapling [% IF main.sslusestapling.item.sslusestapling.length %][% main.sslusestapling.item.sslusestapling %][% ELSE %]On[% END %]
//
// so the stored spelling is Apache's, "On" or "Off", and Apache (a FLAG directive) accepts
// either in any case. Read accepts exactly that: on or off in any case, surrounding blanks
// ignored; an empty string or JSON null means unset, as the template treats it; anything else
// (true, 1, "yes") would make the template write a line Apache refuses, and is an error.
package whm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/stapling-agent/stapling-agent/apacheconf"
)

// ConfFile is WHM's EasyApache 4 settings file (a host path, resolved under the root).
const ConfFile = "/etc/cpanel/ea4/ea4.conf"

// Key is the ea4.conf key behind WHM's "SSL Use Stapling".
const Key = "sslusestapling"

// maxConfFile bounds ea4.conf: cPanel's holds a few dozen short keys, about 2 KB, so 1 MiB
// (apacheconf.MaxSmallFile) is far above any real one and still refuses /dev/zero or a file
// that grows while we read it.
const maxConfFile = apacheconf.MaxSmallFile

// Values of Setting.Value.
const (
	On    = "on"
	Off   = "off"
	Unset = "" // ea4.conf absent or silent: WHM shows, and the template writes, On
)

// ErrInvalid means ea4.conf is not a JSON object, or sslusestapling is not On or Off.
var ErrInvalid = errors.New("invalid")

// Setting is WHM's switch as ea4.conf holds it.
type Setting struct {
	Value   string // On, Off, or Unset
	Present bool   // ea4.conf exists and sets the key (to on or off)
	File    string // host path of ea4.conf
	Err     error  // unreadable or invalid ea4.conf; Value is then Unset and says nothing
}

// Shown is the value WHM displays, "On" or "Off" (Unset shows as WHM's default, On), or
// "unknown" when ea4.conf could not be read.
func (s Setting) Shown() string {
	switch {
	case s.Err != nil:
		return "unknown"
	case s.Value == Off:
		return "Off"
	}
	return "On"
}

// Read reads WHM's switch from ConfFile under root. A missing file (no EA4, or a host where
// WHM never saved its Global Configuration) is not an error: the switch is Unset. The read is
// apacheconf.ReadFile's: regular files only (a FIFO or device is refused at once, symlinks are
// followed to what they reach), at most maxConfFile bytes. Errors are one line naming the file.
func Read(root string) Setting {
	s := Setting{File: ConfFile}
	path := apacheconf.HostPath(root, ConfFile)
	data, err := apacheconf.ReadFile(path, maxConfFile)
	if errors.Is(err, fs.ErrNotExist) {
		// A dangling symlink is not "no file": something points ea4.conf elsewhere, and
		// reporting WHM's default would hide that.
		if info, lerr := os.Lstat(path); lerr == nil && info.Mode()&fs.ModeSymlink != 0 {
			s.Err = &fileError{msg: "read " + ConfFile + ": a symlink to a missing file", err: err}
		}
		return s
	}
	if err != nil {
		s.Err = readError(path, err)
		return s
	}
	v, present, err := Parse(data)
	if err != nil {
		s.Err = fmt.Errorf("%s: %w", ConfFile, err)
		return s
	}
	s.Value, s.Present = v, present
	return s
}

// Parse reads sslusestapling from ea4.conf's content: its value (On, Off or Unset) and whether
// the key is set. It does no I/O. The error does not name the file; Read adds it.
func Parse(data []byte) (value string, present bool, err error) {
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(data, &conf); err != nil {
		return Unset, false, fmt.Errorf("%w JSON: %s", ErrInvalid, oneLine(err.Error()))
	}
	if conf == nil {
		// "null" unmarshals into a nil map without error; ea4.conf is always an object.
		return Unset, false, fmt.Errorf("%w JSON: not an object", ErrInvalid)
	}
	raw, ok := conf[Key]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return Unset, false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return Unset, false, fmt.Errorf("%w %s: %s is not a string (want \"On\" or \"Off\")", ErrInvalid, Key, clip(string(raw)))
	}
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case On, Off:
		return v, true, nil
	case "":
		return Unset, false, nil // the template's .length test: empty is unset
	}
	return Unset, false, fmt.Errorf("%w %s: %q (want \"On\" or \"Off\")", ErrInvalid, Key, clip(s))
}

// Effective is what the agent's reading of the Apache config says about stapling, the facts
// Compare needs to name the cause of a difference. The audit's stapling and layout sections
// hold every field.
type Effective struct {
	State        apacheconf.Stapling // on, off, mixed or unknown
	GlobalAt     string              // "file:line" of the last global SSLUseStapling; "" when none is set
	ManagedBlock bool                // stapling-agent's block is in the include
	Include      string              // host path of the pre-VirtualHost include
	HTTPDConf    string              // host path of httpd.conf
	VHostsOn     int                 // SSL vhosts that turn stapling on with their own SSLUseStapling
}

// Compare reports whether WHM's switch and the effective stapling differ and, when they do,
// the sentence for the operator: which wins, why, and what WHM will show. Unset counts as On,
// as WHM shows it. An unreadable ea4.conf or an unknown effective state compares as no
// difference (there is nothing true to say; the caller reports those errors on their own).
func Compare(whm Setting, eff Effective) (differs bool, explanation string) {
	if whm.Err != nil || eff.State == apacheconf.StaplingUnknown || eff.State == "" {
		return false, ""
	}
	shown := whm.Shown()
	ours := eff.ManagedBlock && eff.Include != "" && strings.HasPrefix(eff.GlobalAt, eff.Include+":")
	// The global off: our block, or a directive we did not write.
	globalOff := "SSLUseStapling off at " + eff.GlobalAt + " (read after the template's global block) turns it off; WHM does not know about that directive"
	if ours {
		globalOff = "stapling-agent's block in " + base(eff.Include) + " (read after the template's global block) turns it off; WHM will keep showing On, and changing the switch has no effect, until `stapling-agent revert` removes the block"
	} else if eff.GlobalAt == "" {
		globalOff = "no SSLUseStapling is set at global scope, so Apache's default (off) applies: httpd.conf was not built from WHM's setting (a local template, or not rebuilt since the setting was saved)"
	}
	switch {
	case shown == "On" && eff.State == apacheconf.StaplingOff:
		return true, "WHM shows SSL Use Stapling On, but " + globalOff

	case shown == "On" && eff.State == apacheconf.StaplingMixed:
		return true, "WHM shows SSL Use Stapling On, but " + globalOff + "; " + turnBackOn(eff.VHostsOn)

	case shown == "Off" && eff.State == apacheconf.StaplingOn:
		if eff.GlobalAt != "" && eff.HTTPDConf != "" && strings.HasPrefix(eff.GlobalAt, eff.HTTPDConf+":") {
			return true, "WHM shows SSL Use Stapling Off, but httpd.conf still says SSLUseStapling on (" + eff.GlobalAt + "): it was not rebuilt from WHM's setting (a local template, or not rebuilt since the setting was saved); stapling is on for every SSL vhost"
		}
		if eff.GlobalAt != "" {
			return true, "WHM shows SSL Use Stapling Off, but SSLUseStapling on at " + eff.GlobalAt + " (read after the template's global block) turns it back on for every SSL vhost; WHM does not know about that directive"
		}
		return true, "WHM shows SSL Use Stapling Off, but every SSL vhost turns stapling on with its own SSLUseStapling on; WHM's switch does not reach them"

	case shown == "Off" && eff.State == apacheconf.StaplingMixed:
		return true, "WHM shows SSL Use Stapling Off and stapling is off globally, but " + turnBackOn(eff.VHostsOn) + " (per-vhost includes or conf.d); WHM's switch does not reach them"
	}
	return false, ""
}

// turnBackOn says which SSL vhosts set their own SSLUseStapling on; zero means the caller did
// not count them.
func turnBackOn(n int) string {
	switch n {
	case 0:
		return "some SSL vhosts turn it back on with their own SSLUseStapling on"
	case 1:
		return "1 SSL vhost turns it back on with its own SSLUseStapling on"
	}
	return fmt.Sprintf("%d SSL vhosts turn it back on with their own SSLUseStapling on", n)
}

// fileError is a read error worded with the host path (not the path under --root), still
// wrapping the cause, so errors.Is(err, apacheconf.ErrNotRegular) and the like hold.
type fileError struct {
	msg string
	err error
}

func (e *fileError) Error() string { return e.msg }
func (e *fileError) Unwrap() error { return e.err }

// readError words err from reading ea4.conf at path (under the root) as one line naming the
// host path.
func readError(path string, err error) error {
	var pe *fs.PathError
	msg := err.Error()
	if errors.As(err, &pe) {
		msg = pe.Err.Error() // "permission denied", "too many levels of symbolic links"
	} else {
		msg = strings.ReplaceAll(msg, path, ConfFile)
	}
	msg = oneLine(msg)
	if !strings.HasPrefix(msg, ConfFile) {
		msg = "read " + ConfFile + ": " + msg
	}
	return &fileError{msg: msg, err: err}
}

func base(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// oneLine keeps an error message on one line for the journal and the terminal.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// clip bounds a value quoted from ea4.conf in an error: 40 bytes say what it is.
func clip(s string) string {
	s = oneLine(s)
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
