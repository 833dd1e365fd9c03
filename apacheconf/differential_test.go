package apacheconf

// The differential test: random Apache configs, read by our walker and by Debian's real apache2,
// whose mod_info prints the configuration exactly as Apache evaluated it (FACTS.md section 14:
// `-t -D DUMP_CONFIG`, conditional sections applied, ${VAR} expanded, Includes inlined). The
// two must agree on every SSLUseStapling, SSLStaplingCache and ErrorLog Apache applies (name,
// arguments, file, line, enclosing <VirtualHost>), on the files read and their order, and on
// the stapling each vhost ends up with.
//
// What DUMP_CONFIG prints (checked with Debian's apache2 2.4.71 here), on stdout; warnings and
// "Syntax OK" go to stderr:
//
//	# In file: /ROOT/etc/apache2/conf/httpd.conf
//	#  13:
//	SSLStaplingCache shmcb:run/stap(256000)
//	#  26:
//	<VirtualHost 127.0.0.1:38123>
//	  #  32:
//	  SSLUseStapling on
//	# In file: /ROOT/etc/apache2/conf.d/sub/v.inc
//	  #   5:
//	  SSLUseStapling off
//	# In file: /ROOT/etc/apache2/conf/httpd.conf
//	</VirtualHost>
//
// - "# In file:" is printed whenever the file of the next directive differs from the last one
//   printed, so it is not a list of files read: a file that prints nothing does not appear, and
//   returning from an include prints the includer again. Every generated file therefore starts
//   with diffMarker, a harmless directive mod_info prints; its occurrences are the reads.
// - "# N:" is the line of the directive's LAST physical line (ap_cfg_getline counts the lines
//   a backslash continuation joins, and one more when the continuation runs into EOF), and the
//   walker reports the first; diffStartLine walks back over continued lines.
// - Directive names are printed as the module spells them (sslusestapling -> SSLUseStapling),
//   arguments as written after ${VAR} expansion, quotes included.
// - Directives executed while reading (LoadModule, Define, UnDefine, Include, IncludeOptional,
//   DefaultRuntimeDir) and the conditional containers are not printed; their effects are.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stapling-agent/stapling-agent/agent/testguard"
)

const (
	// Debian's apache2 (FACTS.md section 14); mod_info makes -D DUMP_CONFIG print the config.
	diffApacheBin  = "/usr/sbin/apache2"
	diffModulesDir = "/usr/lib/apache2/modules"
	// diffServerRoot is Detect's EA4 default. Every path in a generated config is relative to
	// it, so Apache (run with -d ROOT/etc/apache2) and the walker (which resolves host paths
	// under ROOT) read the same files.
	diffServerRoot = "/etc/apache2"
	// diffMarker is the first line of every generated file: mod_info prints it once per read.
	diffMarker = "ServerAdmin file-read-marker@example.invalid"
	// diffDefaultSeeds keeps the whole test near 10 s on two cores (STAPLING_DIFF_SEEDS overrides).
	diffDefaultSeeds = 300
	// diffMaxSkipShare: Apache may reject a few generated configs; a generator whose configs it
	// mostly rejects proves nothing.
	diffMaxSkipShare = 0.10
)

// diffCompared are the directives compared (Traced also holds the Includes, which DUMP_CONFIG
// does not print; the files read stand for them).
var diffCompared = map[string]bool{"sslusestapling": true, "sslstaplingcache": true, "errorlog": true}

func TestDifferentialAgainstApache(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Apache hundreds of times; skipped under -short")
	}
	for _, p := range []string{diffApacheBin, filepath.Join(diffModulesDir, "mod_info.so")} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing: install Debian's apache2 (this test never skips in CI)", p)
			}
			t.Skipf("%s is missing: install Debian's apache2 to run the differential test", p)
		}
	}
	start := time.Now()
	h := &diffHarness{pki: diffPKI(t), sem: make(chan struct{}, max(runtime.GOMAXPROCS(0), 1))}

	t.Run("fixed", func(t *testing.T) {
		for _, c := range diffFixedCases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := h.run(t, c.tree)
				if r.rejected != "" {
					t.Fatalf("Apache rejects this hand-written case:\n%s\n%s", r.rejected, r.files)
				}
				if r.report != "" {
					t.Errorf("%s: walker and Apache disagree\n%s", c.why, r.report)
				}
			})
		}
	})

	// The skip path works: a config Apache refuses comes back as rejected, not as a result.
	t.Run("rejects", func(t *testing.T) {
		var tree diffTree
		tree.add("conf/httpd.conf", diffHeader(40443)+"<IfModule ssl_module>\n  SSLUseStapling maybe\n</IfModule>\n")
		if r := h.run(t, tree); !strings.Contains(r.rejected, "SSLUseStapling") {
			t.Errorf("Apache accepted SSLUseStapling maybe, or the harness lost its complaint: %+v", r)
		}
	})

	seeds := diffSeeds(t)
	var mu sync.Mutex
	ran := 0
	var skipped []string
	var failing []diffFailure
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				tree := diffGenerate(seed)
				r := h.run(t, tree)
				mu.Lock()
				ran++
				mu.Unlock()
				if r.rejected != "" {
					mu.Lock()
					skipped = append(skipped, fmt.Sprintf("seed %d: %s", seed, diffFirstLine(r.rejected)))
					mu.Unlock()
					t.Skipf("Apache rejects the config of seed %d (counted; more than %.0f%% fails the test):\n%s\n%s",
						seed, 100*diffMaxSkipShare, r.rejected, r.files)
				}
				if r.report != "" {
					mu.Lock()
					failing = append(failing, diffFailure{seed, tree.lines(), r.kinds})
					mu.Unlock()
					t.Errorf("seed %d: walker and Apache disagree (rerun: SEED=%d scripts/difftest.sh)\n%s", seed, seed, r.report)
				}
			})
		}
	})

	sort.Strings(skipped)
	sort.Slice(failing, func(i, j int) bool { return failing[i].lines < failing[j].lines })
	t.Logf("%d seeds in %s: %d disagree, %d rejected by Apache", ran, time.Since(start).Round(time.Millisecond), len(failing), len(skipped))
	if len(failing) > 0 {
		var b strings.Builder
		for i, f := range failing {
			if i == 20 {
				fmt.Fprintf(&b, "  ... and %d more\n", len(failing)-i)
				break
			}
			fmt.Fprintf(&b, "  seed %d (%d lines): %s\n", f.seed, f.lines, strings.Join(f.kinds, ", "))
		}
		t.Errorf("%d of %d seeds disagree with Apache; smallest first:\n%s", len(failing), ran, b.String())
	}
	if ran >= 10 && float64(len(skipped)) > diffMaxSkipShare*float64(ran) {
		t.Errorf("Apache rejected %d of %d generated configs (more than %.0f%%): fix the generator\n%s",
			len(skipped), ran, 100*diffMaxSkipShare, strings.Join(skipped, "\n"))
	}
}

type diffFailure struct {
	seed  uint64
	lines int
	kinds []string
}

// diffSeeds are 1..STAPLING_DIFF_SEEDS (default diffDefaultSeeds), or only STAPLING_DIFF_SEED.
func diffSeeds(t *testing.T) []uint64 {
	if s := os.Getenv("STAPLING_DIFF_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STAPLING_DIFF_SEED=%q: %v", s, err)
		}
		return []uint64{n}
	}
	n := diffDefaultSeeds
	if s := os.Getenv("STAPLING_DIFF_SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("STAPLING_DIFF_SEEDS=%q: want a positive number of seeds", s)
		}
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// A diffTree is a generated Apache config: files by ServerRoot-relative path, in the order
// they were written (httpd.conf first).
type diffTree struct {
	files []diffFile
}

type diffFile struct {
	rel, text string
}

func (tr *diffTree) add(rel, text string) { tr.files = append(tr.files, diffFile{rel, text}) }

func (tr *diffTree) lines() int {
	n := 0
	for _, f := range tr.files {
		n += strings.Count(f.text, "\n") + 1
	}
	return n
}

// String lists every file with line numbers, showing carriage returns, trailing blanks and a
// missing final newline, since those are what some cases are about.
func (tr *diffTree) String() string {
	var b strings.Builder
	for _, f := range tr.files {
		fmt.Fprintf(&b, "== %s\n", path.Join(diffServerRoot, f.rel))
		lines := strings.Split(f.text, "\n")
		last := len(lines) - 1
		if lines[last] == "" {
			lines = lines[:last]
		}
		for i, l := range lines {
			shown := l
			if strings.ContainsAny(l, "\r\t") || strings.TrimRight(l, " ") != l {
				shown = strconv.Quote(l)
			}
			fmt.Fprintf(&b, "%4d  %s\n", i+1, shown)
		}
		if !strings.HasSuffix(f.text, "\n") {
			b.WriteString("      (no newline at end of file)\n")
		}
	}
	return b.String()
}

// diffPKIPair is one self-signed certificate and key for every SSL vhost of the run; Apache's
// config test only checks that the files exist (mod_ssl reads them at startup, which -t never
// reaches).
type diffPKIPair struct{ cert, key []byte }

func diffPKI(t *testing.T) diffPKIPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "differential.test"},
		DNSNames:     []string{"differential.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return diffPKIPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
}

type diffHarness struct {
	pki diffPKIPair
	sem chan struct{} // bounds the apache2 processes running at once
}

// diffResult is one case's outcome: rejected holds Apache's complaint when it refused the
// config; report describes every disagreement ("" when none); kinds names them briefly.
type diffResult struct {
	rejected string
	report   string
	kinds    []string
	files    string
}

// run writes tree under a fresh root, asks Apache and the walker, and compares.
func (h *diffHarness) run(t *testing.T, tree diffTree) diffResult {
	t.Helper()
	root := t.TempDir()
	src := h.write(t, root, tree)
	res := diffResult{files: "generated files:\n" + tree.String()}

	dump, runCfg, rejected, err := h.apache(root)
	if err != nil {
		t.Fatal(err)
	}
	if rejected != "" {
		res.rejected = rejected
		return res
	}
	want, err := diffParseDump(dump, root, src)
	if err == nil {
		err = want.check(src)
	}
	if err != nil {
		t.Fatalf("cannot read Apache's DUMP_CONFIG (a harness bug): %v\n%s\n%s", err, dump, res.files)
	}

	var got diffView
	var c *Config
	l, err := Detect(root)
	if err == nil {
		if c, err = ReadConfig(l); err == nil {
			got = diffWalkerView(c)
		}
	}
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "the walker fails where Apache reads the config: %v\n", err)
		res.kinds = append(res.kinds, "walker error")
	} else {
		// The agent's own run-time cross-check (Ask) must find no difference where there is
		// none: its DUMP_CONFIG reading and its comparison of the Defines -S prints.
		p := newDumpParser(root)
		for _, line := range bytes.Split(dump, []byte("\n")) {
			p.add(line)
		}
		if d := c.DumpDisagreement(&p.d); d != "" {
			fmt.Fprintf(&b, "the run-time DUMP_CONFIG check disagrees: %s\n", d)
			res.kinds = append(res.kinds, "runtime dump")
		}
		var defines []string
		for _, line := range strings.Split(runCfg, "\n") {
			if def, ok := strings.CutPrefix(line, "Define: "); ok && def != "DUMP_CONFIG" && def != "DUMP_RUN_CFG" {
				defines = append(defines, def)
			}
		}
		sort.Strings(defines)
		if d := diffLists(defines, c.Defines()); d != "" {
			fmt.Fprintf(&b, "defines (- Apache only, + walker only):\n%s", d)
			res.kinds = append(res.kinds, "defines")
		}
		for _, part := range []struct {
			kind, title  string
			apache, ours []string
		}{
			{"trace", "directives applied (file:line name args scope)", want.trace, got.trace},
			{"files", "files read, in order", want.files, got.files},
			{"stapling", "effective stapling (vhost's own SSLUseStapling, else the last global one, else off)", want.effective(), got.effective},
		} {
			if d := diffLists(part.apache, part.ours); d != "" {
				fmt.Fprintf(&b, "%s (- Apache only, + walker only):\n%s", part.title, d)
				res.kinds = append(res.kinds, part.kind)
			}
		}
	}
	if b.Len() == 0 {
		return res
	}
	fmt.Fprintf(&b, "%s\nApache's DUMP_CONFIG (ROOT=%s):\n%s", res.files, root, dump)
	res.report = b.String()
	return res
}

// write lays the tree out as an EA4 host under root and returns each file's text by host path.
func (h *diffHarness) write(t *testing.T, root string, tree diffTree) map[string]string {
	t.Helper()
	sr := filepath.Join(root, diffServerRoot)
	files := map[string]string{
		"/etc/cpanel/ea4/is_ea4":         "",
		diffServerRoot + "/ssl/cert.pem": string(h.pki.cert),
		diffServerRoot + "/ssl/key.pem":  string(h.pki.key),
		diffServerRoot + "/logs/.keep":   "",
		diffServerRoot + "/run/.keep":    "",
	}
	src := map[string]string{}
	for _, f := range tree.files {
		hp := path.Join(diffServerRoot, f.rel)
		files[hp] = f.text
		src[hp] = f.text
	}
	for hp, text := range files {
		p := filepath.Join(root, hp)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// LoadModule lines say modules/mod_x.so, as on EA4, where modules is a symlink too.
	if err := os.Symlink(diffModulesDir, filepath.Join(sr, "modules")); err != nil {
		t.Fatal(err)
	}
	return src
}

// apache runs the config test with DUMP_CONFIG and DUMP_RUN_CFG (printed after the dump,
// from its "ServerRoot:" line on). A config Apache refuses comes back as rejected (its
// output); err is for the harness itself failing.
func (h *diffHarness) apache(root string) (dump []byte, runCfg, rejected string, err error) {
	h.sem <- struct{}{}
	defer func() { <-h.sem }()
	// apache2 -t reads the config and exits; the timeout only guards against a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := []string{diffApacheBin, "-d", filepath.Join(root, diffServerRoot), "-f", "conf/httpd.conf", "-t", "-D", "DUMP_CONFIG", "-D", "DUMP_RUN_CFG"}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A clean environment: Apache expands ${VAR} from it too, and no generated name may come
	// from the test's environment. testguard's mark lets it find a leaked process.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if v := os.Getenv(testguard.RunVar); v != "" {
		cmd.Env = append(cmd.Env, testguard.RunVar+"="+v)
	}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ctx.Err() != nil {
		return nil, "", "", fmt.Errorf("%s: timed out: %s", strings.Join(argv, " "), stderr.String())
	}
	if _, ok := err.(*exec.ExitError); ok {
		return nil, "", fmt.Sprintf("%s: %v\n%s%s", strings.Join(argv, " "), err, stderr.String(), stdout.String()), nil
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	// With DUMP_RUN_CFG Apache prints no "Syntax OK": the run-time section after the dump
	// says the whole config was read.
	out := stdout.Bytes()
	i := bytes.Index(out, []byte("\nServerRoot: "))
	if !bytes.HasPrefix(out, []byte("ServerRoot: ")) && i < 0 {
		return nil, "", "", fmt.Errorf("%s: no DUMP_RUN_CFG after the dump:\n%s", strings.Join(argv, " "), out)
	}
	return out[:i+1], string(out[i+1:]), "", nil
}

// diffDirective is one compared directive as either side reports it.
type diffDirective struct {
	name  string   // lower-case
	args  []string // SSLUseStapling's lower-cased
	at    Location // first line of the statement
	vhost *Location
}

func (d diffDirective) String() string {
	scope := "global"
	if d.vhost != nil {
		scope = fmt.Sprintf("vhost %s:%d", d.vhost.File, d.vhost.Line)
	}
	return fmt.Sprintf("%s:%d %s %q %s", d.at.File, d.at.Line, d.name, d.args, scope)
}

func diffNormalize(name string, args []string) (string, []string) {
	name = strings.ToLower(name)
	out := append([]string(nil), args...)
	if name == "sslusestapling" {
		for i := range out {
			out[i] = strings.ToLower(out[i])
		}
	}
	return name, out
}

// diffView is one side's answer, as comparable lists.
type diffView struct {
	trace, files, effective []string
}

func diffWalkerView(c *Config) diffView {
	var v diffView
	for _, d := range c.Trace {
		name, args := diffNormalize(d.Name, d.Args)
		if !diffCompared[name] {
			continue
		}
		dd := diffDirective{name: name, args: args, at: d.Location}
		if d.VHost != nil {
			loc := *d.VHost
			dd.vhost = &loc
		}
		v.trace = append(v.trace, dd.String())
	}
	v.files = append(v.files, c.Files...)
	// What the agent's decisions use: VHosts and StaplingOf (Global for the main server).
	v.effective = append(v.effective, "main server: "+diffOnOff(c.Global == "on"))
	for _, vh := range c.VHosts {
		v.effective = append(v.effective, fmt.Sprintf("vhost %s:%d: %s", vh.File, vh.Line, diffOnOff(c.StaplingOf(vh))))
	}
	sort.Strings(v.effective[1:])
	return v
}

func diffOnOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// diffOracle is what Apache's dump says.
type diffOracle struct {
	directives []diffDirective
	trace      []string
	files      []string
	vhosts     []Location
}

// effective applies Apache's rule (FACTS.md section 4) to the dump: a vhost's own last
// SSLUseStapling, else the last global one (wherever it stands relative to the vhosts), else off.
func (o diffOracle) effective() []string {
	global := ""
	own := map[Location]string{}
	for _, d := range o.directives {
		// SSLUseStapling is a FLAG: invoke_cmd reads its first word and ignores the rest
		// (`SSLUseStapling on off`, from a ${VAR}, is on).
		if d.name != "sslusestapling" || len(d.args) == 0 {
			continue
		}
		if d.vhost == nil {
			global = d.args[0]
		} else {
			own[*d.vhost] = d.args[0]
		}
	}
	out := []string{"main server: " + diffOnOff(global == "on")}
	for _, vh := range o.vhosts {
		v, ok := own[vh]
		if !ok {
			v = global
		}
		out = append(out, fmt.Sprintf("vhost %s:%d: %s", vh.File, vh.Line, diffOnOff(v == "on")))
	}
	sort.Strings(out[1:])
	return out
}

var diffLineComment = regexp.MustCompile(`^#\s*(\d+):$`)

// diffParseDump reads DUMP_CONFIG's output (format in the file comment). root is stripped from
// Apache's paths; src (file text by host path) maps Apache's last-physical-line numbers to the
// first line of each statement.
func diffParseDump(dump []byte, root string, src map[string]string) (diffOracle, error) {
	var o diffOracle
	file, line := "", 0
	var vhost *Location
	for i, raw := range strings.Split(string(dump), "\n") {
		s := strings.TrimSpace(raw)
		switch {
		case s == "":
		case strings.HasPrefix(s, "# In file: "):
			p := strings.TrimPrefix(s, "# In file: ")
			rest, ok := strings.CutPrefix(p, root)
			if !ok || !strings.HasPrefix(rest, "/") {
				return o, fmt.Errorf("dump line %d: %s is outside ROOT %s", i+1, p, root)
			}
			file = path.Clean(rest)
			if _, ok := src[file]; !ok {
				return o, fmt.Errorf("dump line %d: Apache read %s, which the test did not write", i+1, file)
			}
		case diffLineComment.MatchString(s):
			line, _ = strconv.Atoi(diffLineComment.FindStringSubmatch(s)[1])
		case strings.HasPrefix(s, "#"):
			return o, fmt.Errorf("dump line %d: unknown comment %q", i+1, s)
		case strings.HasPrefix(s, "</"):
			if strings.EqualFold(strings.TrimSuffix(s[2:], ">"), "VirtualHost") {
				vhost = nil
			}
		default:
			if file == "" || line == 0 {
				return o, fmt.Errorf("dump line %d: %q has no file or line before it", i+1, s)
			}
			at := Location{File: file, Line: diffStartLine(src[file], line)}
			line = 0
			if strings.HasPrefix(s, "<") {
				words := diffWords(strings.TrimSuffix(s[1:], ">"))
				if len(words) > 0 && strings.EqualFold(words[0], "VirtualHost") {
					if vhost != nil {
						return o, fmt.Errorf("dump line %d: nested <VirtualHost>", i+1)
					}
					vhost = &at
					o.vhosts = append(o.vhosts, at)
				}
				continue
			}
			words := diffWords(s)
			if strings.Join(words, " ") == diffMarker {
				o.files = append(o.files, file)
				continue
			}
			name, args := diffNormalize(words[0], words[1:])
			if !diffCompared[name] {
				continue
			}
			d := diffDirective{name: name, args: args, at: at}
			if vhost != nil {
				v := *vhost
				d.vhost = &v
			}
			o.directives = append(o.directives, d)
			o.trace = append(o.trace, d.String())
		}
	}
	if vhost != nil {
		return o, fmt.Errorf("<VirtualHost> at %s:%d never closed in the dump", vhost.File, vhost.Line)
	}
	return o, nil
}

// check proves the line mapping on every case: each directive's statement, read from where the
// oracle says it starts (joining continued lines as Apache does), begins with its name.
func (o diffOracle) check(src map[string]string) error {
	for _, d := range o.directives {
		stmt := diffStatementAt(src[d.at.File], d.at.Line)
		// A statement that starts with ${VAR} takes its name from the variable.
		if !strings.HasPrefix(strings.ToLower(stmt), d.name+" ") && !strings.HasPrefix(stmt, "${") {
			return fmt.Errorf("%s:%d is %q, not the %s Apache reported", d.at.File, d.at.Line, stmt, d.name)
		}
	}
	for _, v := range o.vhosts {
		if stmt := diffStatementAt(src[v.File], v.Line); !strings.HasPrefix(strings.ToLower(stmt), "<virtualhost ") {
			return fmt.Errorf("%s:%d is %q, not the <VirtualHost> Apache reported", v.File, v.Line, stmt)
		}
	}
	return nil
}

// diffStatementAt is the statement starting on physical line n (1-based), continuations joined.
func diffStatementAt(text string, n int) string {
	lines := strings.Split(text, "\n")
	var b strings.Builder
	for i := n - 1; i >= 0 && i < len(lines); i++ {
		l := strings.TrimSuffix(lines[i], "\r")
		if i == len(lines)-1 || !strings.HasSuffix(l, `\`) {
			b.WriteString(l)
			break
		}
		b.WriteString(strings.TrimSuffix(l, `\`))
	}
	return strings.TrimSpace(b.String())
}

// diffStartLine maps the line Apache reports for a statement (its last physical line) to the
// line it starts on: while the line before ends in a backslash right before its newline,
// the statement began earlier (ap_cfg_getline: "\\\n" or "\\\r\n" continues a line; the
// backslash of a last line without a newline does not).
func diffStartLine(text string, reported int) int {
	lines := strings.Split(text, "\n")
	continued := func(n int) bool { // physical line n (1-based) has a newline and ends in "\"
		if n < 1 || n >= len(lines) {
			return false
		}
		return strings.HasSuffix(strings.TrimSuffix(lines[n-1], "\r"), `\`)
	}
	for continued(reported - 1) {
		reported--
	}
	return reported
}

// diffWords splits a printed directive the way Apache's ap_getword_conf does: blanks separate
// words; a word starting with a quote runs to the matching quote, inside which a backslash
// escapes that quote.
func diffWords(s string) []string {
	var words []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return words
		}
		if q := s[0]; q == '"' || q == '\'' {
			var w strings.Builder
			i := 1
			for ; i < len(s) && s[i] != q; i++ {
				if s[i] == '\\' && i+1 < len(s) && s[i+1] == q {
					i++
				}
				w.WriteByte(s[i])
			}
			words = append(words, w.String())
			s = s[min(i+1, len(s)):]
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		words = append(words, s[:end])
		s = s[end:]
	}
}

// diffLists shows two lists' difference line by line ("" when equal), from their longest
// common subsequence: "-" only Apache, "+" only the walker, " " both.
func diffLists(apache, ours []string) string {
	if strings.Join(apache, "\n") == strings.Join(ours, "\n") && len(apache) == len(ours) {
		return ""
	}
	n, m := len(apache), len(ours)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if apache[i] == ours[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && apache[i] == ours[j]:
			fmt.Fprintf(&b, "    %s\n", apache[i])
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&b, "  + %s\n", ours[j])
			j++
		default:
			fmt.Fprintf(&b, "  - %s\n", apache[i])
			i++
		}
	}
	return b.String()
}

func diffFirstLine(s string) string {
	s = strings.TrimSpace(s)
	lines := strings.Split(s, "\n")
	if len(lines) > 1 {
		return lines[1] // the first line is the command; the second Apache's complaint
	}
	return s
}

// The generator. Every path it writes is ServerRoot-relative; every file starts with the marker.

// diffHeader is what Apache needs to run the config test: an MPM, the modules whose directives
// the generator uses (mod_info for DUMP_CONFIG), a ServerName, a Listen and runtime paths
// inside the tree. CONFD, STAP and LOGN are defined unconditionally so that ${CONFD} in an
// Include path and ${STAP} as SSLUseStapling's value always expand (Apache rejects the config
// otherwise); later Defines may change them, inside conditions or not.
func diffHeader(port int) string {
	return diffMarker + `
LoadModule mpm_prefork_module modules/mod_mpm_prefork.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule socache_shmcb_module modules/mod_socache_shmcb.so
LoadModule ssl_module modules/mod_ssl.so
LoadModule info_module modules/mod_info.so
ServerName localhost
Listen 127.0.0.1:` + strconv.Itoa(port) + `
PidFile run/httpd.pid
DefaultRuntimeDir run
Define CONFD conf.d
Define STAP off
Define LOGN main
`
}

type diffScope int

const (
	diffGlobal diffScope = iota
	diffInVHost
)

type diffGen struct {
	r      *mrand.Rand
	port   int
	tree   diffTree
	dirs   int // include directories made so far
	vhosts int // <VirtualHost> blocks written
	logs   int // ErrorLog names used
	loaded map[string]bool
}

// diffModule is a name for <IfModule> and how often the generator picks it.
type diffModule struct {
	name   string
	weight int
}

// diffModules: loaded by the header (identifier or source file name; prefork's source is
// prefork.c, not mod_mpm_prefork.c), compiled into every httpd (mod_so.c, core.c,
// http_core.c), loaded by a LoadModule the generator may write anywhere or never (rewrite,
// headers), never loaded (status), names Apache does not match (mod_ssl, wrong case, .so),
// and a quoted one (Apache strips the quotes, also after "!").
var diffModules = []diffModule{
	{"ssl_module", 6}, {"mod_ssl.c", 5}, {"mod_ssl", 5}, {"rewrite_module", 3}, {"mod_rewrite.c", 2},
	{"headers_module", 2}, {"mod_headers.c", 2}, {"status_module", 1}, {"mod_status.c", 1},
	{"socache_shmcb_module", 1}, {"mod_info.c", 1}, {"mpm_prefork_module", 1}, {"prefork.c", 1},
	{"mod_mpm_prefork.c", 1}, {"mod_so.c", 2}, {"core.c", 1}, {"http_core.c", 1},
	{"SSL_module", 1}, {"mod_ssl.so", 1}, {`"ssl_module"`, 1},
}

// diffVersions hold for every 2.4.x, so the walker's assumed version cannot matter.
var diffVersions = []string{">= 2.4", "< 2.4", ">= 3", "> 2.2", "< 3", "!< 2.4", "!>= 3", `~ ^2\.4`}

// diffDefineNames: FLAG_A is mostly defined without a value (then ${FLAG_A} is not defined:
// Apache leaves it as written), FLAG_B with one; STAP, LOGN and CONFD are defined by the header.
// Names are case-sensitive: flag_b is never defined.
var diffDefineNames = []string{"FLAG_A", "FLAG_B", "STAP", "LOGN", "NEVER", "flag_b"}

// diffGenerate builds the config of one seed. The same seed always gives the same config.
func diffGenerate(seed uint64) diffTree {
	g := &diffGen{r: mrand.New(mrand.NewPCG(seed, 0x5ee0d)), loaded: map[string]bool{}}
	g.port = 20000 + g.r.IntN(40000)
	items := g.block(diffGlobal, 0, 0, 3+g.r.IntN(7))
	// cPanel's httpd.conf includes conf.d/*.conf at global scope; most seeds do too.
	if g.r.IntN(10) < 6 {
		at := g.r.IntN(len(items) + 1)
		inc := g.include(diffGlobal, 0, "conf.d", "*.conf")
		items = append(items[:at], append([]string{inc}, items[at:]...)...)
	}
	text := diffHeader(g.port) + strings.Join(items, "\n") + "\n"
	g.tree.files = append([]diffFile{{"conf/httpd.conf", text}}, g.tree.files...)
	return g.tree
}

func (g *diffGen) pick(options ...string) string { return options[g.r.IntN(len(options))] }
func (g *diffGen) chance(pct int) bool           { return g.r.IntN(100) < pct }

// block is n statements for scope sc, at include depth and container nesting nest; each
// element is one statement's text, possibly spanning lines (continuations, swallowed lines).
func (g *diffGen) block(sc diffScope, depth, nest, n int) []string {
	var out []string
	for len(out) < n {
		if s := g.statement(sc, depth, nest); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (g *diffGen) statement(sc diffScope, depth, nest int) string {
	switch k := g.r.IntN(30); {
	case k < 7:
		return g.stapling()
	case k < 10:
		return g.errorLog()
	case k < 12:
		if sc != diffGlobal {
			return ""
		}
		return g.pick("SSLStaplingCache", "sslstaplingcache") + " " +
			g.pick("shmcb:run/stapling_cache(128000)", `"shmcb:run/stapling(64000)"`)
	case k < 13:
		return g.define()
	case k < 14:
		// A whole directive in a variable: Apache expands ${VAR} on the logical line before
		// splitting it into words, so the value's words (and quotes) become the directive.
		if g.chance(50) {
			return g.pick("Define", "define") + " LINE " + g.pick(`"SSLUseStapling on"`, `"SSLUseStapling Off"`, `'ErrorLog "logs/a b_log"'`, `"SSLUseStapling"`)
		}
		return "<IfDefine LINE>\n    ${LINE}" + g.pick("", " ", " ${STAP}") + "\n</IfDefine>"
	case k < 15:
		return g.pick("UnDefine", "undefine") + " " + g.pick("FLAG_A", "FLAG_B", "LOGN")
	case k < 20:
		if nest >= 2 {
			return ""
		}
		open, close := g.condition()
		body := g.block(sc, depth, nest+1, 1+g.r.IntN(3))
		return open + "\n" + diffIndent(body) + close
	case k < 23:
		if depth >= 3 {
			return ""
		}
		g.dirs++
		return g.include(sc, depth, fmt.Sprintf("conf.d/inc%d", g.dirs), "")
	case k < 26:
		if sc != diffGlobal || g.vhosts >= 4 {
			return ""
		}
		return g.vhost(depth, nest)
	case k < 27:
		if sc != diffGlobal {
			return ""
		}
		for _, m := range []string{"rewrite", "headers"} {
			if !g.loaded[m] && g.chance(50) {
				g.loaded[m] = true
				return fmt.Sprintf("%s %s_module modules/mod_%s.so", g.pick("LoadModule", "loadmodule"), m, m)
			}
		}
		return ""
	default:
		return g.comment()
	}
}

// stapling is SSLUseStapling in its spellings, sometimes continued across lines (also in the
// middle of the name or of the value: Apache joins the lines without a blank).
func (g *diffGen) stapling() string {
	name := g.pick("SSLUseStapling", "SSLUseStapling", "sslusestapling", "SSLUSESTAPLING")
	on := g.chance(50)
	v := g.pick("on", "On", "ON")
	if !on {
		v = g.pick("off", "Off", "OFF")
	}
	if g.chance(12) {
		v = "${STAP}"
	}
	switch g.r.IntN(10) {
	case 0:
		return name + " \\\n    " + v
	case 1:
		return name[:6] + "\\\n" + name[6:] + " " + v
	case 2:
		if len(v) > 1 && v[0] != '$' {
			return name + " " + v[:1] + "\\\n" + v[1:]
		}
	}
	return name + " " + v
}

func (g *diffGen) logName() string {
	g.logs++
	return fmt.Sprintf("logs/e%d", g.logs)
}

func (g *diffGen) errorLog() string {
	name := g.pick("ErrorLog", "ErrorLog", "errorlog")
	p := g.logName()
	switch g.r.IntN(10) {
	case 0:
		return name + ` "` + p + ` x"`
	case 1:
		return name + " '" + p + "'"
	case 2:
		return name + " " + p + "_${LOGN}"
	case 3:
		return name + " " + p + "_${FLAG_A}_${FLAG_B}"
	case 4:
		return name + " \\\n  " + p
	}
	return name + " " + p
}

func (g *diffGen) define() string {
	d := g.pick("Define", "Define", "define")
	switch g.r.IntN(5) {
	case 0:
		if g.chance(70) {
			return d + " FLAG_A"
		}
		return d + " FLAG_A " + g.pick("a", "1")
	case 1:
		return d + " FLAG_B " + g.pick("yes", "no")
	case 2:
		return d + " LOGN " + g.pick("site", "other")
	default:
		return d + " STAP " + g.pick("on", "off", "On", "OFF")
	}
}

// condition opens and closes a conditional section; names of containers in any case.
func (g *diffGen) condition() (open, close string) {
	neg := func() string {
		if g.chance(35) {
			return "!"
		}
		return ""
	}
	switch k := g.r.IntN(8); {
	case k < 4:
		total := 0
		for _, m := range diffModules {
			total += m.weight
		}
		w := g.r.IntN(total)
		name := ""
		for _, m := range diffModules {
			if w -= m.weight; w < 0 {
				name = m.name
				break
			}
		}
		tag := g.pick("IfModule", "IfModule", "IfModule", "ifmodule", "IFMODULE")
		return "<" + tag + " " + neg() + name + ">", "</" + g.pick(tag, "IfModule", "ifModule") + ">"
	case k < 6:
		tag := g.pick("IfVersion", "IfVersion", "ifversion")
		return "<" + tag + " " + g.pick(diffVersions...) + ">", "</" + g.pick(tag, "IfVersion") + ">"
	default:
		tag := g.pick("IfDefine", "IfDefine", "ifdefine")
		return "<" + tag + " " + neg() + g.pick(diffDefineNames...) + ">", "</" + g.pick(tag, "IfDefine") + ">"
	}
}

// comment is a comment line; one ending in a backslash swallows the next line (Apache joins
// continuations before it looks for comments), one ending in a backslash and a blank does not.
func (g *diffGen) comment() string {
	switch g.r.IntN(6) {
	case 0:
		return "# disabled: \\\n" + g.pick(g.stapling(), g.errorLog())
	case 1:
		return "# see the wiki \\ \n" + g.pick(g.stapling(), g.errorLog())
	}
	return g.pick("# comment", "", "   # indented comment")
}

func (g *diffGen) vhost(depth, nest int) string {
	g.vhosts++
	tag := g.pick("VirtualHost", "VirtualHost", "virtualhost")
	lines := []string{fmt.Sprintf("ServerName v%d.test", g.vhosts)}
	if g.chance(75) {
		engine := "SSLEngine on"
		if g.chance(30) {
			engine = "<IfModule ssl_module>\n  SSLEngine on\n</IfModule>"
		}
		lines = append(lines, engine, "SSLCertificateFile ssl/cert.pem", "SSLCertificateKeyFile ssl/key.pem")
	}
	lines = append(lines, g.block(diffInVHost, depth, nest, 1+g.r.IntN(4))...)
	return fmt.Sprintf("<%s 127.0.0.1:%d>\n%s</%s>", tag, g.port, diffIndent(lines), g.pick(tag, "VirtualHost"))
}

// include writes an Include or IncludeOptional statement and the files it reads, in a
// directory of its own so that no glob reaches another include's files (and no file is read
// from two scopes). pattern "" lets the generator choose the form.
func (g *diffGen) include(sc diffScope, depth int, dir, pattern string) string {
	spell := func(p string) string {
		if g.chance(25) {
			p = "${CONFD}" + strings.TrimPrefix(p, "conf.d")
		}
		if g.chance(15) {
			p = `"` + p + `"`
		}
		return p
	}
	inc := g.pick("Include", "Include", "include")
	opt := g.pick("IncludeOptional", "IncludeOptional", "includeoptional")
	if pattern == "*.conf" { // conf.d/*.conf, as cPanel writes it
		n := g.r.IntN(4)
		for i := 0; i < n; i++ {
			g.child(sc, depth, fmt.Sprintf("%s/%02d-site%d.conf", dir, 10*(i+1)-g.r.IntN(5), i))
		}
		return opt + " " + spell(dir+"/*.conf")
	}
	switch k := g.r.IntN(20); {
	case k < 6: // one file
		g.child(sc, depth, dir+"/site.conf")
		return g.pick(inc, opt) + " " + spell(dir+"/site.conf")
	case k < 13: // a glob, with names it must not match
		optional := g.chance(40)
		n := 1 + g.r.IntN(3)
		if optional {
			n = g.r.IntN(4)
		}
		for i := 0; i < n; i++ {
			g.child(sc, depth, fmt.Sprintf("%s/%d-part.conf", dir, 3*i+g.r.IntN(3)))
		}
		if g.chance(20) {
			g.child(sc, depth, dir+"/.hidden.conf") // Apache's glob skips dotfiles
		}
		if g.chance(20) {
			g.child(sc, depth, dir+"/old.conf.bak")
		}
		if optional {
			return opt + " " + spell(dir+"/*.conf")
		}
		return inc + " " + spell(dir+"/*.conf")
	case k < 15: // nothing there
		return opt + " " + spell(g.pick(dir+"/missing.conf", dir+"/*.conf", dir+"/*/site.conf"))
	case k < 18: // a directory: every file in it, dotfiles too, subdirectories recursed
		g.child(sc, depth, dir+"/b.conf")
		if g.chance(50) {
			g.child(sc, depth, dir+"/a.txt")
		}
		if g.chance(30) {
			g.child(sc, depth, dir+"/sub/z.conf")
		}
		if g.chance(15) {
			g.child(sc, depth, dir+"/.dot.conf")
		}
		return inc + " " + spell(g.pick(dir, dir+"/"))
	default: // a wildcard in a directory part
		for _, sub := range []string{"a", "b", "c"} {
			if g.chance(60) {
				g.child(sc, depth, dir+"/"+sub+"/site.conf")
			}
		}
		return opt + " " + spell(dir+"/*/site.conf")
	}
}

// child writes one included file: the marker, statements for the includer's scope, and
// sometimes an ending that tests line joining (a continuation into EOF, with or without a
// final newline) or CRLF line ends.
func (g *diffGen) child(sc diffScope, depth int, rel string) {
	text := diffMarker + "\n" + strings.Join(g.block(sc, depth+1, 0, 1+g.r.IntN(4)), "\n") + "\n"
	switch g.r.IntN(12) {
	case 0:
		text += g.pick("ErrorLog "+g.logName(), "SSLUseStapling "+g.pick("on", "off")) + "\\\n"
	case 1:
		text += "ErrorLog " + g.logName() + "\\"
	}
	if g.chance(8) {
		text = strings.ReplaceAll(text, "\n", "\r\n")
	}
	g.tree.add(rel, text)
}

// diffIndent indents statements one level. A line that continues the one before it is left as
// written: its leading blanks are part of the statement (a line "SSLUse\" then "Stapling on"
// must stay one word).
func diffIndent(stmts []string) string {
	var b strings.Builder
	for _, s := range stmts {
		prev := ""
		for _, l := range strings.Split(s, "\n") {
			if l != "" && !strings.HasSuffix(prev, `\`) {
				b.WriteString("  ")
			}
			b.WriteString(l)
			b.WriteString("\n")
			prev = l
		}
	}
	return b.String()
}

// The hand-written cases: the configurations users reported the walker getting wrong.

type diffCase struct {
	name, why string
	tree      diffTree
}

const diffFixedVHost = `<VirtualHost 127.0.0.1:40443>
  ServerName a.test
  SSLEngine on
  SSLCertificateFile ssl/cert.pem
  SSLCertificateKeyFile ssl/key.pem
</VirtualHost>
`

// diffFixed makes a case: httpd.conf is the header and body, other files (by ServerRoot-relative
// path) get the marker as their first line, so their line numbers in a report are one more
// than in the text here.
func diffFixed(name, why, body string, files ...string) diffCase {
	c := diffCase{name: name, why: why}
	c.tree.add("conf/httpd.conf", diffHeader(40443)+body)
	for i := 0; i+1 < len(files); i += 2 {
		c.tree.add(files[i], diffMarker+"\n"+files[i+1])
	}
	return c
}

func diffFixedCases() []diffCase {
	return []diffCase{
		diffFixed("ifmodule-mod_ssl-is-no-module",
			"<IfModule mod_ssl> matches no module (only ssl_module or mod_ssl.c), so Apache skips the off",
			"SSLStaplingCache shmcb:run/stapling(64000)\nSSLUseStapling On\n<IfModule mod_ssl>\n  SSLUseStapling off\n</IfModule>\n"+diffFixedVHost),
		diffFixed("ifversion-2.4",
			"<IfVersion >= 2.4> holds on every Apache 2.4, so the off inside applies",
			"SSLUseStapling On\n<IfVersion >= 2.4>\nSSLUseStapling off\n</IfVersion>\n"+diffFixedVHost),
		diffFixed("define-sites-dir",
			"Define'd ${SITES_DIR} names the directory of the vhost files; a vhost there turns stapling back on",
			"SSLUseStapling off\nDefine SITES_DIR conf.d/sites\nIncludeOptional ${SITES_DIR}/*.vhost\n",
			"conf.d/sites/a.vhost",
			"<VirtualHost 127.0.0.1:40443>\n  ServerName a.test\n  SSLEngine on\n  SSLCertificateFile ssl/cert.pem\n  SSLCertificateKeyFile ssl/key.pem\n  SSLUseStapling on\n</VirtualHost>\n"),
		diffFixed("include-ends-in-continuation",
			"the include's last line ends in a backslash: Apache joins it with nothing and reads the off",
			"SSLUseStapling On\nInclude conf.d/tail.conf\n"+diffFixedVHost,
			"conf.d/tail.conf", "ErrorLog logs/tail_log\nSSLUseStapling \\\n  off\\\n"),
		diffFixed("include-ends-in-backslash-without-newline",
			"a backslash on a last line with no newline is no continuation: Apache keeps it in the argument",
			"Include conf.d/tail.conf\n"+diffFixedVHost,
			"conf.d/tail.conf", "SSLUseStapling off\nErrorLog logs/tail_log\\"),
		diffFixed("later-global-on-wins",
			"among global SSLUseStapling lines the last wins, even after the vhosts",
			"SSLStaplingCache shmcb:run/stapling(64000)\nSSLUseStapling off\n"+diffFixedVHost+"sslusestapling On\n"),

		// Found by the generator (seeds in the report of the first run).
		diffFixed("comment-backslash-blank",
			"a backslash followed by a blank continues nothing, so the comment does not swallow the off",
			"SSLUseStapling On\n# was: stapling breaks the staging CA \\ \nSSLUseStapling off\n"+diffFixedVHost),
		diffFixed("glob-skips-dotfiles",
			"Apache's wildcard matching skips names starting with a dot (APR_FNM_PERIOD)",
			"SSLUseStapling On\nInclude conf.d/extra/*.conf\n"+diffFixedVHost,
			"conf.d/extra/a.conf", "ErrorLog logs/a_log\n",
			"conf.d/extra/.#a.conf", "SSLUseStapling off\n"),
		diffFixed("ifmodule-source-name-of-mpm",
			"mod_mpm_prefork.so is built from prefork.c: <IfModule prefork.c> holds, <IfModule mod_mpm_prefork.c> does not",
			"<IfModule mod_mpm_prefork.c>\n  SSLUseStapling On\n</IfModule>\n<IfModule prefork.c>\n  SSLUseStapling off\n</IfModule>\n"+diffFixedVHost),
		diffFixed("ifmodule-before-loadmodule",
			"<IfModule> sees only the modules loaded by the LoadModule lines read so far",
			"SSLUseStapling On\n<IfModule rewrite_module>\n  SSLUseStapling off\n</IfModule>\nLoadModule rewrite_module modules/mod_rewrite.so\n<IfModule mod_rewrite.c>\n  ErrorLog logs/rewrite_log\n</IfModule>\n"+diffFixedVHost),
		diffFixed("define-without-value",
			"Define NAME without a value makes <IfDefine NAME> true but defines no ${NAME}: Apache leaves it as written (AH00111)",
			"Define NOVAL\n<IfDefine NOVAL>\n  ErrorLog logs/noval_${NOVAL}\n</IfDefine>\n<IfDefine noval>\n  SSLUseStapling On\n</IfDefine>\n"+diffFixedVHost),
		diffFixed("negated-ifmodule-in-vhost",
			"a true <IfModule !x> inside a vhost is no scope: the vhost's own on applies",
			"SSLUseStapling off\n<VirtualHost 127.0.0.1:40443>\n  ServerName a.test\n  SSLEngine on\n  SSLCertificateFile ssl/cert.pem\n  SSLCertificateKeyFile ssl/key.pem\n  <IfModule !mod_headers.c>\n    SSLUseStapling on\n  </IfModule>\n</VirtualHost>\n"),
	}
}

// TestDifferentialParseDump checks the oracle's reader on a dump Debian's apache2 printed (ROOT
// standing for the tree): statement lines from last physical lines (a continuation, and one
// into EOF with CRLF line ends), files read from the markers, vhost scope, quotes.
func TestDifferentialParseDump(t *testing.T) {
	httpd := diffMarker + `
LoadModule mpm_prefork_module modules/mod_mpm_prefork.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule ssl_module modules/mod_ssl.so
LoadModule info_module modules/mod_info.so
ServerName localhost
Listen 127.0.0.1:40443
SSLUseStapling \
  off
Include conf.d/a.conf
<VirtualHost 127.0.0.1:40443>
  ErrorLog "logs/a log"
  Include conf.d/a.conf
</VirtualHost>
`
	src := map[string]string{
		"/etc/apache2/conf/httpd.conf": httpd,
		"/etc/apache2/conf.d/a.conf":   diffMarker + "\r\nsslusestapling On\r\nErrorLog logs/x\\\r\n",
	}
	dump := `# In file: ROOT/etc/apache2/conf/httpd.conf
#   1:
ServerAdmin file-read-marker@example.invalid
#   6:
ServerName localhost
#   7:
Listen 127.0.0.1:40443
#   9:
SSLUseStapling off
# In file: ROOT/etc/apache2/conf.d/a.conf
#   1:
ServerAdmin file-read-marker@example.invalid
#   2:
SSLUseStapling On
#   4:
ErrorLog logs/x
# In file: ROOT/etc/apache2/conf/httpd.conf
#  11:
<VirtualHost 127.0.0.1:40443>
  #  12:
  ErrorLog "logs/a log"
# In file: ROOT/etc/apache2/conf.d/a.conf
  #   1:
  ServerAdmin file-read-marker@example.invalid
  #   2:
  SSLUseStapling On
  #   4:
  ErrorLog logs/x
# In file: ROOT/etc/apache2/conf/httpd.conf
</VirtualHost>
`
	o, err := diffParseDump([]byte(dump), "ROOT", src)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.check(src); err != nil {
		t.Fatal(err)
	}
	h, a := "/etc/apache2/conf/httpd.conf", "/etc/apache2/conf.d/a.conf"
	want := diffOracle{
		trace: []string{
			h + `:8 sslusestapling ["off"] global`,
			a + `:2 sslusestapling ["on"] global`,
			a + `:3 errorlog ["logs/x"] global`,
			h + `:12 errorlog ["logs/a log"] vhost ` + h + `:11`,
			a + `:2 sslusestapling ["on"] vhost ` + h + `:11`,
			a + `:3 errorlog ["logs/x"] vhost ` + h + `:11`,
		},
		files:  []string{h, a, a},
		vhosts: []Location{{h, 11}},
	}
	if d := diffLists(want.trace, o.trace); d != "" {
		t.Errorf("trace:\n%s", d)
	}
	if d := diffLists(want.files, o.files); d != "" {
		t.Errorf("files:\n%s", d)
	}
	if len(o.vhosts) != 1 || o.vhosts[0] != want.vhosts[0] {
		t.Errorf("vhosts = %v, want %v", o.vhosts, want.vhosts)
	}
	if d := diffLists([]string{"main server: on", "vhost " + h + ":11: on"}, o.effective()); d != "" {
		t.Errorf("effective:\n%s", d)
	}
}
