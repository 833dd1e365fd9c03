package env

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

// Under systemd (stderr is the journal's stream) each line goes to journald natively: MESSAGE
// the JSON line as before, every top-level field a journal field, PRIORITY from the level; a
// line journald refuses goes to stderr. Elsewhere, or with log.format json, plain JSON.
func TestJournaldWriter(t *testing.T) {
	type sent struct {
		msg  string
		prio journal.Priority
		vars map[string]string
	}
	var got []sent
	var refuse bool
	send := func(msg string, p journal.Priority, vars map[string]string) error {
		if refuse {
			return errors.New("journald socket gone")
		}
		got = append(got, sent{msg, p, vars})
		return nil
	}
	var stderr bytes.Buffer
	log, err := newLogger(&stderr, "info", "", send)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Str("decision", "remediate").Str("cause", "read_timeout").Str("responder", "http://r.test/\nFORGED=1").
		Int("threshold", 3).Strs("affected_responders", []string{"http://r.test/"}).Str("_hidden", "x").Msg("decision")
	log.Error().Str("decision", "remediate").Str("result", "failed").Msg("decision")
	if len(got) != 2 || stderr.Len() != 0 {
		t.Fatalf("sent %d lines, stderr %q", len(got), stderr.String())
	}
	d := got[0]
	if d.prio != journal.PriWarning || got[1].prio != journal.PriErr {
		t.Errorf("priorities %d %d", d.prio, got[1].prio)
	}
	for k, want := range map[string]string{
		"DECISION": "remediate", "CAUSE": "read_timeout", "RESPONDER": "http://r.test/\nFORGED=1", "THRESHOLD": "3",
		"AFFECTED_RESPONDERS": `["http://r.test/"]`, "HIDDEN": "x", "SYSLOG_IDENTIFIER": "stapling-agent",
	} {
		if d.vars[k] != want {
			t.Errorf("%s=%q, want %q", k, d.vars[k], want)
		}
	}
	for _, k := range []string{"MESSAGE", "LEVEL", "TIME", "FORGED", "_HIDDEN"} {
		if _, ok := d.vars[k]; ok {
			t.Errorf("field %s sent: %v", k, d.vars)
		}
	}
	if !strings.HasPrefix(d.msg, `{"level":"warn","decision":"remediate"`) || !strings.HasSuffix(d.msg, `"message":"decision"}`) {
		t.Errorf("MESSAGE is not the JSON line: %s", d.msg)
	}

	refuse = true
	log.Info().Str("decision", "none").Msg("decision")
	if !strings.Contains(stderr.String(), `"decision":"none"`) {
		t.Errorf("a refused line is lost: stderr %q", stderr.String())
	}

	// Not the journal's stream, or log.format json: JSON on w.
	got = nil
	for _, tc := range []struct {
		format string
		send   journalSend
	}{{"", nil}, {"json", send}} {
		var w bytes.Buffer
		l, _ := newLogger(&w, "info", tc.format, tc.send)
		l.Info().Msg("x")
		if !strings.HasPrefix(w.String(), `{"level":"info"`) || len(got) != 0 {
			t.Errorf("format %q, journal %v: %q", tc.format, tc.send != nil, w.String())
		}
	}
	if stderrIsJournal(&bytes.Buffer{}) {
		t.Error("a buffer is the journal")
	}
}
