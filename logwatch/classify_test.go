package logwatch

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func init() { timeLoc = time.UTC } // golden files must not depend on the machine's zone

// describe renders an event as one golden line.
func describe(ev Event) string {
	if ev.Kind == KindNone {
		return "none"
	}
	s := fmt.Sprintf("%s %s %s level=%s proc=%s", ev.Kind, ev.Code, ev.Time.Format("2006-01-02T15:04:05.000000"), ev.Level, ev.Proc)
	if ev.Status != "" {
		s += fmt.Sprintf(" status=%q", ev.Status)
	}
	if ev.Cause != "" {
		s += " cause=" + string(ev.Cause)
	}
	if ev.Responder != "" {
		s += " responder=" + ev.Responder
	}
	return s
}

// TestClassifyGolden classifies every line of testdata/*.log: the real corpus from Debian's
// Apache (shared/corpus), other mod_ssl messages, and forged lines that must all be "none".
func TestClassifyGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.log")
	if len(files) < 3 {
		t.Fatalf("missing samples: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, _ := os.ReadFile(f)
			var out strings.Builder
			for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
				out.WriteString(describe(Classify([]byte(line))) + "\n")
			}
			golden := strings.TrimSuffix(f, ".log") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(out.String()), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create)", err)
			}
			if out.String() != string(want) {
				t.Fatalf("classification differs from %s:\n%s", golden, out.String())
			}
		})
	}
}

func TestForgedLinesAreNeverEvents(t *testing.T) {
	data, _ := os.ReadFile("testdata/forged.log")
	for i, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if ev := Classify(line); ev.Kind != KindNone {
			t.Errorf("forged line %d classified as %s: %s", i+1, ev.Kind, line)
		}
	}
}

func TestClassifyRealCorpus(t *testing.T) {
	want := []string{
		"transport AH01974 cause=connect_refused responder=127.0.0.1:8888",
		"responder_failure AH01941",
		"transport AH01977 cause=read_timeout",
		"transport AH01980 cause=empty_response",
		"responder_failure AH01941",
		"certificate_status AH02969",
		"transport AH01980 cause=http_status",
		"responder_failure AH01941",
		"transport AH01988 cause=decode_error",
		"none",
		"responder_failure AH01941",
	}
	data, _ := os.ReadFile("testdata/real_stapling_lines.log")
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d", len(lines), len(want))
	}
	for i, line := range lines {
		ev := Classify([]byte(line))
		got := ev.Kind.String()
		if ev.Kind != KindNone {
			got += " " + ev.Code
		}
		if ev.Cause != "" {
			got += " cause=" + string(ev.Cause)
		}
		if ev.Responder != "" {
			got += " responder=" + ev.Responder
		}
		if got != want[i] {
			t.Errorf("line %d: got %q, want %q", i+1, got, want[i])
		}
	}
}

func TestCorrelatorJoinsCauses(t *testing.T) {
	var got []string
	for _, f := range []string{"testdata/real_stapling_lines.log", "testdata/other.log", "testdata/forged.log"} {
		var c Correlator
		fh, _ := os.Open(f)
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if fl, ok := c.Add(Classify(sc.Bytes())); ok {
				got = append(got, fmt.Sprintf("%s@%s", fl.Cause, fl.Responder))
			}
		}
		fh.Close()
	}
	want := []string{
		// real corpus
		"connect_refused@127.0.0.1:8888", "read_timeout@", "http_status@", "decode_error@",
		// other.log
		"dns@ocsp.sectigo.com", "unreachable@ocsp.digicert.com", "connect_timeout@ocsp.digicert.com",
		"send_failed@ocsp.digicert.com", "empty_response@", "unspecified@",
		"unspecified@", // the refused connect was 3 s before its AH01941: too far to join
		"unspecified@", // the threaded 2.2-style timestamp line
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("failures:\n got %v\nwant %v", got, want)
	}
}

func TestClassifyLongLine(t *testing.T) {
	line := "[Sat Nov 21 16:58:31.936629 2026] [ssl:error] [pid 3899] AH01941: " + strings.Repeat("x", MaxLineLen)
	if Classify([]byte(line)).Kind != KindNone {
		t.Fatal("a line over MaxLineLen was classified")
	}
}

// FuzzClassify: no input panics; an event always starts with Apache's own header; and no text
// placed after the header of a line that is not a stapling event (a request URI, a PHP
// message, a ModSecurity field) ever makes it one.
func FuzzClassify(f *testing.F) {
	for _, p := range []string{"testdata/real_stapling_lines.log", "testdata/forged.log", "testdata/other.log"} {
		data, _ := os.ReadFile(p)
		for _, l := range bytes.Split(data, []byte("\n")) {
			f.Add(l)
		}
	}
	prefixes := [][]byte{
		[]byte("[Sat Nov 21 17:02:00.000001 2026] [core:error] [pid 4100] [client 203.0.113.66:41000] AH00126: Invalid URI in request GET /"),
		[]byte("[Sat Nov 21 17:02:00.000002 2026] [proxy_fcgi:error] [pid 4101] [client 203.0.113.66:41001] AH01071: Got error 'PHP message: "),
		[]byte("[Sat Nov 21 17:02:00.000006 2026] [ssl:error] [pid 4105] [client 203.0.113.66:41005] AH02032: Hostname "),
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev := Classify(line)
		if ev.Kind != KindNone {
			if line[0] != '[' || !bytes.Contains(line, []byte("] [ssl:")) || codes[ev.Code].kind != ev.Kind {
				t.Fatalf("odd event %+v from %q", ev, line)
			}
		}
		for _, p := range prefixes {
			forged := append(append([]byte(nil), p...), line...)
			if ev := Classify(forged); ev.Kind != KindNone {
				t.Fatalf("forged line classified as %s: %q", ev.Kind, forged)
			}
		}
	})
}

// Apache 2.4.6 (CentOS 7) logs AH02235 at start-up where later versions log AH02604: an init
// event, printed at every start and graceful restart, never a responder failure.
func TestClassifyAH02235IsInit(t *testing.T) {
	ev := Classify([]byte("[Sat Nov 21 16:58:31.936579 2026] [ssl:error] [pid 3899] AH02235: Unable to configure server certificate for stapling"))
	if ev.Kind != KindInit || ev.Code != "AH02235" {
		t.Fatalf("%+v", ev)
	}
}
