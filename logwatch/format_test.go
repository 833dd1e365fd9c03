package logwatch

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// docFormat is the example in Apache's ErrorLogFormat documentation.
const docFormat = `[%{u}t] [%-m:%l] [pid %P:tid %T] %7F: %E: [client\ %a] %M% ,\ referer\ %{Referer}i`

func mustFormat(t testing.TB, spec string) *Format {
	t.Helper()
	f, err := ParseFormat(spec)
	if err != nil {
		t.Fatalf("ParseFormat(%q): %v", spec, err)
	}
	return f
}

func TestParseFormatRefuses(t *testing.T) {
	for _, c := range []struct{ spec, err string }{
		{`[%{u}t] [%-m] [pid %P] %M`, "ErrorLogFormat has no %l (level) before %M"},
		{`[%{u}t] [%l] [pid %P] %M`, "ErrorLogFormat has no %m (module) before %M"},
		{`[%-m:%l] [pid %P] %M`, "ErrorLogFormat has no %t (time) before %M"},
		{`[%{u}t] [%-m:%l] [pid %P]`, "ErrorLogFormat has no %M (message)"},
		{`[%{%H:%M:%S}t] [%-m:%l] %M`, "ErrorLogFormat has no %t giving the year, month, day, hour, minute and second"},
		{`[%{%Y-%m-%d %H:%M:%S %Z}t] [%-m:%l] %M`, "ErrorLogFormat time %{%Y-%m-%d %H:%M:%S %Z}t: uses %Z, which this parser does not read (it reads %Y %m %d %e %H %M %S %T %F %R %b %h %a %z)"},
		{`[%t] [%m:%l] [%{Referer}i] %M`, "ErrorLogFormat has %{Referer}i before %M: a client controls its text, so its lines cannot be parsed safely"},
		{`[%t] [%m:%l] %V %M`, "ErrorLogFormat has %V before %M: a client controls its text, so its lines cannot be parsed safely"},
		{`[%t] [%m:%l] %{X}e %M`, "ErrorLogFormat has %{X}e before %M: a client controls its text, so its lines cannot be parsed safely"},
		{`[%t] [%m|%E] [%l] %M`, `ErrorLogFormat has %m in a field that Apache leaves out when %E is empty; put a space or "% " between them`},
		{`[%t] [%m:%l|%7F] %M`, `ErrorLogFormat has %m in a field that Apache leaves out when the line's level does not meet %7F; put a space or "% " between them`},
		{`[%t] [%m:%l] [%P%T] %M`, "ErrorLogFormat has %P followed by something that can start with a byte %P itself can contain, so its end cannot be found"},
		{`[%t] [%m:%l] %E %M`, `ErrorLogFormat has %E not followed by text in its field (as in "%E: "), so the end of the status text cannot be found`},
		{`[%t] [%m:%l] %M [client %a]`, "ErrorLogFormat has %a after %M; only text and request items (%{...}i, %{...}e, %{...}n, %V, %L) can follow the message"},
		{`[%t] [%m:%l] %M(%{Referer}i)`, `ErrorLogFormat has %{Referer}i in the field of %M: Apache would erase the message with it; put a space or "% " before it`},
		{`[%t] [%m:%l] %{c}L: %M`, "ErrorLogFormat has a field (\" \" %{c}L \":\") that Apache may leave out and that can read the start of the message as its own text"},
		{`[%t] [%m:%l] %v: %M`, "ErrorLogFormat has a field (\" \" %v \":\") that Apache may leave out and that can read the start of the message as its own text"},
		{`[%t] [%m:%l] [%a] [%A] %M`, "ErrorLogFormat has a field (\" [\" %a \"]\") that Apache may leave out and that can start like what follows it, so a line cannot be parsed unambiguously"},
		{`[%t] [%m:%l] %+a %M`, "ErrorLogFormat uses the '+' flag (%a), which Apache refuses in the main error log format"},
		{`[%t] [%m:%l] %99F %M`, "ErrorLogFormat has a level condition out of range (99)"},
		{`[%t] [%m:%l] %x %M`, "ErrorLogFormat uses %x, which this parser does not know (Apache's own directives are a A e E F i k l L m n P t T v V M)"},
		{`[%t] [%m:%l] %M %{Referer`, "ErrorLogFormat ends inside a % directive"},
		{`[%t] [%m:%l] %M %M`, "ErrorLogFormat has %M twice"},
	} {
		t.Run(c.spec, func(t *testing.T) {
			f, err := ParseFormat(c.spec)
			if err == nil || err.Error() != c.err {
				t.Fatalf("got %v, %v\nwant error %q", f, err, c.err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatal("error is not one line")
			}
		})
	}
}

// Lines written by Debian's Apache/2.4.71 (TZ=UTC) with these formats, prefork and event;
// TestFormatMatchesApache produces them afresh.
func TestFormatClassifyRealLines(t *testing.T) {
	refused := "transport AH01974 level=error proc=%s status=\"111\" cause=connect_refused responder=127.0.0.1:9"
	failure := "responder_failure AH01941 level=error proc=%s"
	for _, c := range []struct {
		spec, line, want string
	}{
		{`[%{u}t] [%-m:%l] [pid %P] %E: %M`,
			`[Sun Nov 22 03:56:03.945625 2026] [ssl:error] [pid 1034] (111)Connection refused: AH01974: could not connect to OCSP responder '127.0.0.1:9'`,
			fmt.Sprintf(refused, "1034")},
		{`[%{u}t] [%-m:%l] [pid %P] %E: %M`,
			`[Sun Nov 22 03:56:03.945671 2026] [ssl:error] [pid 1034] AH01941: stapling_renew_response: responder error`,
			fmt.Sprintf(failure, "1034")},
		{docFormat, // prefork: %T is empty, and Apache erases " %T]"
			`[Sun Nov 22 03:56:06.876031 2026] [ssl:error] [pid 1317:tid (111)Connection refused: [client 127.0.0.1:59314] AH01974: could not connect to OCSP responder '127.0.0.1:9'`,
			fmt.Sprintf(refused, "1317")},
		{docFormat,
			`[Sun Nov 22 03:56:06.876093 2026] [ssl:error] [pid 1317:tid AH01941: stapling_renew_response: responder error`,
			fmt.Sprintf(failure, "1317")},
		{docFormat, // event
			`[Sun Nov 22 03:56:08.334952 2026] [ssl:error] [pid 1425:tid 140054702974656] (111)Connection refused: [client 127.0.0.1:46524] AH01974: could not connect to OCSP responder '127.0.0.1:9'`,
			fmt.Sprintf(refused, "1425:tid 140054702974656")},
		{docFormat,
			`[Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1425:tid 140054702974656] AH01941: stapling_renew_response: responder error`,
			fmt.Sprintf(failure, "1425:tid 140054702974656")},
		{`%{cuz}t %m %l %P %{g}T %E: %a %M`,
			`2026-11-22 03:56:11.208130 +0000 ssl error 1736 1766 (111)Connection refused: 127.0.0.1:51284 AH01974: could not connect to OCSP responder '127.0.0.1:9'`,
			fmt.Sprintf(refused, "1736:tid 1766")},
		{`%{cuz}t %m %l %P %{g}T %E: %a %M`,
			`2026-11-22 03:56:11.208183 +0000 ssl error 1736 1766 AH01941: stapling_renew_response: responder error`,
			fmt.Sprintf(failure, "1736:tid 1766")},
	} {
		got := describe(mustFormat(t, c.spec).Classify([]byte(c.line)))
		got = got[:strings.Index(got, " 2026-")] + got[strings.Index(got, " level="):]
		if got != c.want {
			t.Errorf("%s\n%s\n got %s\nwant %s", c.spec, c.line, got, c.want)
		}
	}
}

// Each time option as Debian's Apache/2.4.71 writes it (checked by starting it with each).
func TestFormatTimeOptions(t *testing.T) {
	usec := time.Date(2026, 11, 22, 3, 49, 4, 758125000, time.UTC)
	sec := usec.Truncate(time.Second)
	msec := usec.Truncate(time.Millisecond)
	for _, c := range []struct {
		opt, text string
		want      time.Time
	}{
		{"%t", "Sun Nov 22 03:49:04 2026", sec},
		{"%{u}t", "Sun Nov 22 03:49:04.758125 2026", usec},
		{"%{c}t", "2026-11-22 03:49:04", sec},
		{"%{cu}t", "2026-11-22 03:49:04.758125", usec},
		{"%{uc}t", "2026-11-22 03:49:04.758125", usec},
		{"%{z}t", "Sun Nov 22 03:49:04 2026 +0000", sec},
		{"%{cuz}t", "2026-11-22 03:49:04.758125 +0000", usec},
		{"%{cuz}t", "2026-11-22 09:19:04.758125 +0530", usec},
		{"%{cuz}t", "2026-11-21 22:49:04.758125 -0500", usec},
		{"%{m}t", "Sun Nov 22 03:49:04.758 2026", msec},
		{"%{m}t", "Sun Nov 22 03:49:04 2026", sec}, // Apache before 'm' existed ignores it
		{"%{mcz}t", "2026-11-22 03:49:04.758 +0000", msec},
		{"%{msec_frac}t", "2026-11-22 03:49:04.758", msec}, // letters m and c; the rest ignored
		{"%{usec}t", "2026-11-22 03:49:04.758125", usec},
		{"%{sec}t", "2026-11-22 03:49:04", sec},
		{"%{g}t", "Sun Nov 22 03:49:04 2026", sec}, // no such letter: ignored
		{"%{%Y-%m-%dT%H:%M:%S %z}t", "2026-11-22T03:49:04 +0000", sec},
		{"%{%F %T}t", "2026-11-22 03:49:04", sec},
		{"%{%a %b %e %T %Y}t", "Sun Nov 22 03:49:04 2026", sec},
	} {
		t.Run(c.opt+" "+c.text, func(t *testing.T) {
			f := mustFormat(t, "["+c.opt+"] [%m:%l] %M")
			line := "[" + c.text + "] [ssl:error] AH01941: stapling_renew_response: responder error"
			tm, ok := f.Time([]byte(line + "\n"))
			if !ok || !tm.Equal(c.want) {
				t.Fatalf("Time = %v, %v; want %v", tm, ok, c.want)
			}
			ev := f.Classify([]byte(line))
			if ev.Kind != KindResponderFailure || !ev.Time.Equal(c.want) {
				t.Fatalf("Classify = %+v", ev)
			}
		})
	}
	// Two time items must agree.
	f := mustFormat(t, "[%{%F}t %{%T}t|%{c}t] [%m:%l] %M")
	if _, ok := f.Time([]byte("[2026-11-22 03:49:04|2026-11-22 03:49:04] [ssl:error] AH01941: x")); !ok {
		t.Fatal("agreeing time items refused")
	}
	if _, ok := f.Time([]byte("[2026-11-22 03:49:04|2026-11-23 03:49:04] [ssl:error] AH01941: x")); ok {
		t.Fatal("disagreeing time items accepted")
	}
}

// The lexer follows server/core.c: escapes, "% " separators, "%%", constant text split at
// a space after non-space text.
func TestFormatLexer(t *testing.T) {
	raws, err := lexFormat(`[%{u}t] [pid %P]% ,\ a\tb\\%%`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range raws {
		s := fmt.Sprintf("%q", r.lit)
		if r.verb != 0 {
			s = r.String()
		}
		if r.sep {
			s = "|" + s
		}
		got = append(got, s)
	}
	want := `"[" %{u}t "]" |" [pid" |" " %P "]" |", a\tb\\" "%"`
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}

// A Format for the default layout classifies the real corpus exactly as Classify does.
func TestFormatAgreesWithClassify(t *testing.T) {
	f := mustFormat(t, `[%{u}t] [%m:%l] [pid %P:tid %{g}T] %E: [client\ %a] %M% ,\ referer:\ %{Referer}i`)
	n := 0
	for _, p := range []string{"testdata/real_stapling_lines.log", "testdata/other.log", "testdata/forged.log"} {
		data, _ := os.ReadFile(p)
		for _, line := range bytes.Split(data, []byte("\n")) {
			if !bytes.Contains(line, []byte(":tid ")) || len(line) < 21 || line[20] != '.' {
				continue // the format always writes a tid and microseconds
			}
			want, got := Classify(line), f.Classify(line)
			if describe(want) != describe(got) || want.Detail != got.Detail {
				t.Errorf("%s\n Classify %s\n   Format %s", line, describe(want), describe(got))
			}
			if want.Kind != KindNone {
				n++
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d events compared", n)
	}
}

// Text a client or tenant controls can reach a custom-format line only inside the message
// (after the code position) or after it; none of it can make an event.
func TestFormatHostileLines(t *testing.T) {
	f := mustFormat(t, docFormat)
	real := `[Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1425:tid 140054702974656] AH01941: stapling_renew_response: responder error`
	if f.Classify([]byte(real)).Kind != KindResponderFailure {
		t.Fatal("real line not an event")
	}
	future := strings.Replace(real, "2026", "2031", 1)
	for name, line := range map[string]string{
		"forged custom line inside a PHP message":  `[Sun Nov 22 03:56:08.335015 2026] [proxy_fcgi:error] [pid 1425:tid 140054702974656] [client 203.0.113.6:4000] AH01071: Got error 'PHP message: ` + real + `'`,
		"forged default line inside a PHP message": `[Sun Nov 22 03:56:08.335015 2026] [proxy_fcgi:error] [pid 1425:tid 140054702974656] [client 203.0.113.6:4000] AH01071: Got error 'PHP message: [Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1] AH01941: x'`,
		"forged line in mod_ssl's SNI message":     `[Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1425:tid 140054702974656] [client 203.0.113.6:4000] AH02032: Hostname ] AH01941: stapling_renew_response: responder error provided via SNI`,
		"referer carrying separators":              `[Sun Nov 22 03:56:08.335015 2026] [core:error] [pid 1425:tid 1] [client 203.0.113.6:4000] AH00128: File does not exist: /x, referer: ] [ssl:error] [pid 1:tid 1] AH01941: x`,
		"raw default line":                         `[Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1425] AH01941: stapling_renew_response: responder error`,
		"client field with brackets":               `[Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1425:tid 1] [client 1.2.3.4] [ssl:error] 5] AH01941: x`,
		"level not Apache's":                       strings.Replace(real, "ssl:error", "ssl:errorx", 1),
		"module not ssl":                           strings.Replace(real, "ssl:error", "sslx:error", 1),
		"over-long line":                           real + strings.Repeat("x", MaxLineLen),
		"%7F field at error level":                 strings.Replace(real, "] AH01941", "] ssl_util_stapling.c(123): AH01941", 1),
	} {
		if ev := f.Classify([]byte(line)); ev.Kind != KindNone {
			t.Errorf("%s: classified as %s %s", name, ev.Kind, ev.Code)
		}
	}
	// A date in the future is the line's own claim: Classify reports it (the scan's window
	// and disorder probes judge it), exactly as the default format does.
	if ev := f.Classify([]byte(future)); ev.Kind != KindResponderFailure || ev.Time.Year() != 2031 {
		t.Fatalf("future line: %+v", ev)
	}
	// At debug the %7F field is written, and then it is parsed.
	f2 := mustFormat(t, `[%{u}t] [%-m:%l] %7F: %M`)
	if ev := f2.Classify([]byte(`[Sun Nov 22 03:56:08.335015 2026] [ssl:debug] ssl_util_stapling.c(123): AH01941: x`)); ev.Kind != KindResponderFailure {
		t.Fatalf("debug line with %%F: %+v", ev)
	}
	if ev := f2.Classify([]byte(`[Sun Nov 22 03:56:08.335015 2026] [ssl:debug] AH01941: x`)); ev.Kind != KindNone {
		t.Fatalf("debug line without its %%F field: %+v", ev)
	}
}

func TestFormatClassifyDoesNotAllocate(t *testing.T) {
	f := mustFormat(t, docFormat)
	lines := [][]byte{
		[]byte(`[Sun Nov 22 03:56:08.335015 2026] [core:error] [pid 1425:tid 140054702974656] [client 203.0.113.6:4000] AH00128: File does not exist: /x`),
		[]byte(`[Sun Nov 22 03:56:08.335015 2026] [ssl:error] [pid 1425:tid 140054702974656] AH02032: Hostname a provided via SNI`),
		[]byte(`junk`),
	}
	for _, l := range lines {
		if n := testing.AllocsPerRun(100, func() { f.Classify(l); f.Time(l) }); n != 0 {
			t.Errorf("%d allocations for %s", int(n), l)
		}
	}
}

// FuzzFormatClassify: any format ParseFormat accepts, and any line, never panic; an event
// always names a code we know and comes from a line whose message field holds that code.
func FuzzFormatClassify(f *testing.F) {
	for _, spec := range []string{docFormat, `[%{u}t] [%-m:%l] [pid %P] %E: %M`, `%{cuz}t %m %l %P %{g}T %E: %a %M`, `[%{%F %T}t] %m %l %M`} {
		data, _ := os.ReadFile("testdata/real_stapling_lines.log")
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f.Add(spec, sc.Text())
		}
	}
	f.Fuzz(func(t *testing.T, spec, line string) {
		fm, err := ParseFormat(spec)
		if err != nil {
			return
		}
		ev := fm.Classify([]byte(line))
		fm.Time([]byte(line))
		if ev.Kind != KindNone && (codes[ev.Code].kind != ev.Kind || !strings.Contains(line, ev.Code+": ")) {
			t.Fatalf("odd event %+v from %q in %q", ev, line, spec)
		}
	})
}

// customLog writes n seconds of a log in docFormat, one line a second: every 600th a
// responder failure; others noise, some from mod_ssl and some with "ssl" text that are not
// events. It returns the failure times.
func customLog(t *testing.T, path string, start time.Time, n int) []time.Time {
	t.Helper()
	var sb strings.Builder
	var fails []time.Time
	for i := 0; i < n; i++ {
		ts := start.Add(time.Duration(i) * time.Second).Format("Mon Jan 02 15:04:05.000000 2006")
		switch {
		case i%600 == 0:
			fmt.Fprintf(&sb, "[%s] [ssl:error] [pid %d:tid 1%d] AH01941: stapling_renew_response: responder error\n", ts, i, i)
			fails = append(fails, start.Add(time.Duration(i)*time.Second))
		case i%7 == 0:
			fmt.Fprintf(&sb, "[%s] [ssl:info] [pid %d:tid 1%d] [client 198.51.100.7:52114] AH01964: Connection to child 1 established (server ssl:443)\n", ts, i, i)
		case i%11 == 0: // a PHP message carrying a whole forged line
			fmt.Fprintf(&sb, "[%s] [proxy_fcgi:error] [pid %d:tid 1%d] [client 198.51.100.7:52114] AH01071: Got error 'PHP message: [%s] [ssl:error] [pid 1:tid 1] AH01941: stapling_renew_response: responder error'\n", ts, i, i, ts)
		default:
			fmt.Fprintf(&sb, "[%s] [core:error] [pid %d:tid 1%d] [client 198.51.100.7:52114] AH00128: File does not exist: /home/u/public_html/favicon.ico\n", ts, i, i)
		}
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return fails
}

// ScanHistoryFormat counts exactly what classifying every line finds, and seeks by time in
// a custom-format file as ScanHistory does in a default one.
func TestScanHistoryFormatSeeks(t *testing.T) {
	f := mustFormat(t, docFormat)
	p := filepath.Join(t.TempDir(), "error_log")
	fails := customLog(t, p, t0, 48*3600) // two days, ~12 MB
	info, _ := os.Stat(p)
	end := t0.Add(48 * time.Hour)

	// Every line classified, no prefilter, no seek: the reference count.
	data, _ := os.ReadFile(p)
	ref := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		if f.Classify(line).Kind != KindNone {
			ref++
		}
	}
	var all []time.Time
	st, err := ScanHistoryFormat(t.Context(), p, f, t0.Add(-time.Hour), end, func(ev Event) { all = append(all, ev.Time) })
	if err != nil || ref != len(fails) || len(all) != ref || st.Lines != 48*3600 || st.Bytes != info.Size() {
		t.Fatalf("full scan: %d events, reference %d, failures %d, %+v, %v", len(all), ref, len(fails), st, err)
	}
	since := end.Add(-time.Hour)
	var got []time.Time
	st, err = ScanHistoryFormat(t.Context(), p, f, since, end, func(ev Event) { got = append(got, ev.Time) })
	var want []time.Time
	for _, x := range fails {
		if !x.Before(since) {
			want = append(want, x)
		}
	}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("1h window: got %v, want %v (%v)", got, want, err)
	}
	if st.Bytes > info.Size()/10 || st.Disordered != 0 {
		t.Fatalf("1h window read %d of %d bytes (disordered %d): no seek", st.Bytes, info.Size(), st.Disordered)
	}

	// Forged future dates appended (raw lines): the probes see the disorder, the file is
	// read whole, and the real failures are still found.
	fh, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(fh, "[%s] [ssl:error] [pid 9:tid 9] AH01941: stapling_renew_response: responder error\n",
			end.Add(3*time.Hour+time.Duration(i)*time.Second).Format("Mon Jan 02 15:04:05.000000 2006"))
	}
	fh.Close()
	got = got[:0]
	st, err = ScanHistoryFormat(t.Context(), p, f, since, end, func(ev Event) { got = append(got, ev.Time) })
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) || st.Disordered != 1 {
		t.Fatalf("with forged dates: got %d events, disordered %d, %v", len(got), st.Disordered, err)
	}
}

// The custom-format prefilter is the text around "ssl" in the %m field.
func TestFormatPrefilter(t *testing.T) {
	for spec, want := range map[string]string{
		docFormat:                          " [ssl:",
		`%{cuz}t %m %l %P %{g}T %E: %a %M`: " ssl",
		`{"module":"%-m","time":"%t","level":"%l","message":"%M"}`: `{"module":"ssl","time":"`,
	} {
		if got := string(mustFormat(t, spec).needle); got != want {
			t.Errorf("%s: needle %q, want %q", spec, got, want)
		}
	}
}
