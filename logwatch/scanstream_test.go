package logwatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
)

// refScan is what scanStream must equal: every line classified, no prefilter.
func refScan(content []byte, lf *Format) (events []string, lines, skipped int64) {
	for len(content) > 0 {
		line := content
		if i := bytes.IndexByte(content, '\n'); i >= 0 {
			line, content = content[:i], content[i+1:]
		} else {
			content = nil
		}
		lines++
		if len(line) > MaxLineLen {
			skipped++
			continue
		}
		if ev := lf.Classify(line); ev.Kind != KindNone {
			events = append(events, describe(ev))
		}
	}
	return events, lines, skipped
}

// chunkReader returns its data in reads of the given sizes, cycling.
type chunkReader struct {
	data  []byte
	sizes []int
	n     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(c.data), c.sizes[c.n%len(c.sizes)])
	c.n++
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// The prefilter finds every line that classifies, wherever the reads cut the log: a hit at
// the very start or end of a read, a line split across reads (at every byte of the needle),
// a line longer than the scan buffer, CRLF endings, no final newline, and the needle in
// client-controlled text (not an event, as Classify decides).
func TestScanStreamAgreesWithClassifyingEveryLine(t *testing.T) {
	ts := stamp(t0)
	fail := "[" + ts + "] [ssl:error] [pid 7] AH01941: stapling_renew_response: responder error"
	transport := "[" + ts + "] [ssl:error] [pid 7] (70007)The timeout specified has expired: [client 192.0.2.1:443] AH01974: could not connect to OCSP responder 'ocsp.example.com:80'"
	forged := []string{
		"[" + ts + "] [core:error] [pid 8] [client 203.0.113.66:41000] AH00126: Invalid URI in request GET /x] [ssl:error] [pid 1] AH01941: stapling_renew_response: responder error",
		"[" + ts + "] [proxy_fcgi:error] [pid 9] [client 203.0.113.66:41001] AH01071: Got error 'PHP message: " + fail + "'",
		"[ssl:error] [pid 1] AH01941: stapling_renew_response: responder error",
		"[ssl:" + fail,
	}
	noise := "[" + ts + "] [php:error] [pid 10] [client 198.51.100.7:1] AH01071: Got error 'PHP message: [sl: [ss:'"
	var lines []string
	for i := range 40 {
		lines = append(lines, noise[:len(noise)-i%7], fail, forged[i%len(forged)], transport)
	}
	lines = append(lines, fail+"\r", strings.Repeat("y", MaxLineLen+1), fail+strings.Repeat("z", MaxLineLen)) // over-long, not events
	content := []byte(strings.Join(lines, "\n") + "\n")
	// A line longer than the scan buffer, of needles, between events.
	huge := []byte(strings.Join([]string{fail, strings.Repeat("[ssl:", bufSize/4), fail}, "\n") + "\n")

	for name, data := range map[string][]byte{
		"final newline":          content,
		"no final newline":       append(bytes.Clone(content), fail...),
		"CRLF":                   bytes.ReplaceAll(content, []byte("\n"), []byte("\r\n")),
		"longer than the buffer": huge,
	} {
		wantEv, wantLines, wantSkipped := refScan(data, nil)
		if len(wantEv) < 2 {
			t.Fatalf("%s: the reference found only %d events", name, len(wantEv))
		}
		allSizes := [][]int{{bufSize}, {len(fail) + 1, 3, 5000}, {bufSize - 2, 1, 4}, {17, len(lines[0])}}
		if len(data) > bufSize/2 {
			// Small reads of a long line rescan the growing buffer each time: keep them few.
			allSizes = [][]int{{bufSize}, {bufSize - 2, 1, 4}, {100_000, 3}}
		}
		for _, sizes := range allSizes {
			t.Run(fmt.Sprintf("%s/reads %v", name, sizes), func(t *testing.T) {
				var got []string
				var st ScanStats
				r := &chunkReader{data: data, sizes: sizes}
				if err := scanStream(context.Background(), r, nil, false, &st, func(ev Event) { got = append(got, describe(ev)) }, nil); err != nil {
					t.Fatal(err)
				}
				if strings.Join(got, "\n") != strings.Join(wantEv, "\n") || st.Lines != wantLines || st.Skipped != wantSkipped {
					t.Fatalf("%d events, %d lines, %d skipped; want %d, %d, %d", len(got), st.Lines, st.Skipped, len(wantEv), wantLines, wantSkipped)
				}
			})
		}
	}
}

// The same for a custom ErrorLogFormat, whose needle is the text around "ssl" in its %m field.
func TestScanStreamFormatAgreesWithClassifyingEveryLine(t *testing.T) {
	f := mustFormat(t, `%{cuz}t %m %l %P %{g}T %E: %a %M`)
	at := t0.Format("2006-01-02 15:04:05.000000 -0700")
	var b strings.Builder
	for i := range 3000 {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "%s ssl error %d %d : AH01941: stapling_renew_response: responder error\n", at, i, i)
		case 1:
			fmt.Fprintf(&b, "%s core error %d %d : 203.0.113.66 AH00126: Invalid URI in request GET / ssl error 1 1 : AH01941: x\n", at, i, i)
		case 2:
			fmt.Fprintf(&b, "%s ssl warn %d %d : AH01909: host.example.com:443:0 server certificate does not include an ID\n", at, i, i)
		default:
			fmt.Fprintf(&b, "%s php error %d %d : 198.51.100.7 AH01071: Got error ' ssl ssl ssl'\n", at, i, i)
		}
	}
	data := []byte(b.String())
	wantEv, wantLines, _ := refScan(data, f)
	if len(wantEv) != 750 {
		t.Fatalf("reference found %d events, want 750", len(wantEv))
	}
	for _, sizes := range [][]int{{bufSize}, {7}, {65, 64, 63}} {
		var got []string
		var st ScanStats
		if err := scanStream(context.Background(), &chunkReader{data: data, sizes: sizes}, f, false, &st, func(ev Event) { got = append(got, describe(ev)) }, nil); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, "\n") != strings.Join(wantEv, "\n") || st.Lines != wantLines {
			t.Fatalf("reads %v: %d events, %d lines; want %d, %d", sizes, len(got), st.Lines, len(wantEv), wantLines)
		}
	}
}
