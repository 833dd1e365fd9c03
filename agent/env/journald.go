package env

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
)

// journaldWriter sends each zerolog line to journald natively, for a daemon whose stderr is
// the journal (JOURNAL_STREAM, systemd.exec(5)). JSON text on stderr reaches the journal as
// one MESSAGE: `journalctl DECISION=remediate` cannot find it. Here every top-level field of
// the line is a journal field as well (DECISION=, CAUSE=, RESPONDER=, MODE=, RESULT=, ...;
// arrays and objects as their JSON), PRIORITY follows the level (the decision lines are
// warnings, failed ones errors: `journalctl -p warning`), and MESSAGE stays the JSON line
// itself, so `journalctl -o cat | jq` and every reader of the old output still work.
//
// Why not zerolog's journald writer: it sets MESSAGE to the bare message ("decision") and
// drops the line when journald cannot take it. Here a line journald refuses (its socket gone
// while journald restarts) goes to stderr, which is the journal's stream again.
//
// Values are attacker-controlled text at times (a responder URL from error_log): journald's
// native protocol carries any bytes, newlines included, without escaping; the keys are ours.
type journaldWriter struct {
	fallback io.Writer
	send     journalSend
}

// journalSend is journal.Send's shape.
type journalSend func(msg string, p journal.Priority, vars map[string]string) error

func (w journaldWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	var fields map[string]json.RawMessage
	if json.Unmarshal(line, &fields) != nil {
		return w.fallback.Write(p)
	}
	vars := map[string]string{"SYSLOG_IDENTIFIER": "stapling-agent"}
	prio := journal.PriInfo
	for k, raw := range fields {
		var s string
		isString := json.Unmarshal(raw, &s) == nil
		switch k {
		case zerolog.TimestampFieldName, zerolog.MessageFieldName:
			continue
		case zerolog.LevelFieldName:
			prio = journalPriority(s)
			continue
		}
		key := journalKey(k)
		if key == "" {
			continue
		}
		if isString {
			vars[key] = s
		} else {
			vars[key] = string(raw)
		}
	}
	if err := w.send(string(line), prio, vars); err != nil {
		return w.fallback.Write(p)
	}
	return len(p), nil
}

// journalKey is a zerolog key as a journal field name: upper case, [A-Z0-9_], not starting
// with "_" (trusted fields are journald's own) or a digit; "" when nothing is left.
func journalKey(k string) string {
	k = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, k)
	k = strings.TrimLeft(k, "_0123456789")
	switch k {
	case "", "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER":
		return ""
	}
	return k
}

func journalPriority(level string) journal.Priority {
	switch level {
	case zerolog.LevelDebugValue, zerolog.LevelTraceValue:
		return journal.PriDebug
	case zerolog.LevelWarnValue:
		return journal.PriWarning
	case zerolog.LevelErrorValue:
		return journal.PriErr
	case zerolog.LevelFatalValue:
		return journal.PriCrit
	case zerolog.LevelPanicValue:
		return journal.PriEmerg
	}
	return journal.PriInfo
}

// stderrIsJournal: JOURNAL_STREAM names w's device and inode (systemd.exec(5): compare it
// with the descriptor, a child that inherited the variable has another stderr).
func stderrIsJournal(w io.Writer) bool {
	type fder interface{ Fd() uintptr }
	f, ok := w.(fder)
	if !ok || f.Fd() != 2 {
		return false
	}
	is, err := journal.StderrIsJournalStream()
	return err == nil && is
}
