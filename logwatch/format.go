package logwatch

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Format is an Apache 2.4 ErrorLogFormat compiled for parsing. It is immutable once
// ParseFormat returns it, so one Format serves any number of goroutines; parsing a line
// allocates nothing unless the line is an event. A nil *Format means Apache's default format.
//
// How Apache writes a line (server/log.c do_errorlog_format, server/core.c
// parse_errorlog_item, httpd 2.4; checked against Debian's Apache/2.4.71):
//
//   - The format is a list of items: constant text, or %-directives. An item that begins with
//     a space, or follows "% ", starts a new field. Constant text ends before a '%' or before a
//     space that follows non-space text, so " [pid " is two items, " [pid" and " ", each
//     starting a field; "\ " is a space that does not end the text or start a field; "\n",
//     "\r", "\t" are control characters and "\x" is x.
//   - When a directive renders nothing (no APR status for %E, no connection for %a, %T on a
//     non-threaded MPM), or its level condition (%7F: only at debug and below) is not met,
//     Apache erases the whole field, text already written for it included, and skips the rest
//     of it. "%-X" writes "-" instead. %M is written even inside an erased field.
//
// So a field is either written whole or not at all. The parser reads each field that may be
// left out if it parses, and takes it as left out otherwise, never going back. ParseFormat
// proves that this cannot go wrong on a line Apache wrote: an optional field cannot start
// like the fields that may follow in its place (its leading text and the first byte of its
// first directive, against theirs: one byte of lookahead past the common text, as in an
// LL(1) grammar), it cannot read the start of an event's message ("AHnnnnn: ") as its own,
// and every directive's extent is decided by the bytes it may contain (digits for %P, lowercase
// address bytes for %a, as inet_ntop writes them) or by the text after it (%E). A format for
// which it cannot prove all three is refused with an error naming the item.
//
// Required, because an event cannot be told apart or placed in time without them: a time
// (%t, in ctime form with any of Apache's u/m/c/z letters, or a strftime form using %Y %m %d
// %e %H %M %S %T %F %R %b %h %a %z), the module (%m, with or without '-': mod_ssl's lines
// carry "ssl"), the level (%l) and the message (%M). Each of the first three must sit in a
// field that Apache always writes.
//
// Optional, and what is lost without them: %P and %T/%{g}T (the worker, which Correlator
// uses to join a transport line to its AH01941; without both every line shares one worker,
// so causes may join across workers; %T is the pthread id and empty under prefork, %{g}T is
// gettid(2) and taken to be always written, as on Linux, which is what the default format
// shows in ":tid"), %E (the APR status: without it AH01974/AH01977 causes
// are "unspecified"), %a (the client; used only to check the line's shape). Also parsed:
// %A, %k, %L, %{c}L, %F (any modifiers, level conditions included), %v, "%%".
//
// Refused before %M: %{...}i, %{...}e, %{...}n and %V carry text a client controls
// (headers, environment set from them, notes, the Host name), and a client who controls text
// at the start of a line can write the whole rest of a forged header, with Apache's real
// text pushed into what we would take for the message. After %M only constant text and
// request items (%{...}i, %{...}e, %{...}n, %V, %L) may appear: mod_ssl's stapling lines
// have no request, so that tail is the same fixed text on every event line and the message
// ends exactly before it.
type Format struct {
	spec     string
	fields   []field // the fields before the message's field
	pre      []item  // the message field's items before %M
	preOpt   bool    // pre is left out when one of its directives is empty
	preLead  lead
	suffix   []byte // what Apache writes after the message on a stapling line
	needle   []byte // scan prefilter: bytes every event line contains
	lastTime int    // index of the last field holding a time item
}

// FormatError is why ParseFormat refused a format.
type FormatError struct {
	Spec string
	Msg  string
}

func (e *FormatError) Error() string { return "ErrorLogFormat " + e.Msg }

// maxFields bounds the fields before the message: a bit each in a line's parse state.
const maxFields = 64

type itemKind uint8

const (
	itLit        itemKind = iota
	itTime                // %t
	itModule              // %m
	itLevel               // %l
	itPid                 // %P
	itTid                 // %T, %{g}T
	itStatus              // %E
	itClient              // %a
	itAddr                // %A
	itDigits              // %k
	itLogID               // %L
	itFile                // %F
	itHost                // %v
	itClientText          // %i %e %n %V: text a client controls; empty on stapling lines
	itMsg                 // %M
)

type item struct {
	kind     itemKind
	lit      []byte // itLit
	tf       []tElem
	name     string // the directive as written, for errors
	hyphen   bool
	minLevel int
	maybe    bool // may render nothing on a stapling line (and so erase its field)
	request  bool // renders nothing on every stapling line (no request there)
	cs       *charset
}

type field struct {
	items    []item
	optional bool
	minLevel bool // holds an item with a level condition
	maybe    bool // holds a directive that may be empty
	lead     lead
}

// lead is how a field starts: its leading constant text, then a byte of next.
type lead struct {
	lit  []byte
	next charset
}

type charset [4]uint64

func (c *charset) has(b byte) bool { return c[b>>6]&(1<<(b&63)) != 0 }
func (c *charset) add(s string) {
	for i := 0; i < len(s); i++ {
		c[s[i]>>6] |= 1 << (s[i] & 63)
	}
}
func (c *charset) addRange(lo, hi byte) {
	for b := int(lo); b <= int(hi); b++ {
		c[b>>6] |= 1 << (b & 63)
	}
}
func (c charset) union(d charset) charset {
	for i := range c {
		c[i] |= d[i]
	}
	return c
}
func (c charset) meets(d charset) bool {
	for i := range c {
		if c[i]&d[i] != 0 {
			return true
		}
	}
	return false
}
func (c *charset) span(b []byte) int {
	for i, x := range b {
		if !c.has(x) {
			return i
		}
	}
	return len(b)
}

func set(s string) *charset {
	var c charset
	c.add(s)
	return &c
}

func ranges(extra string, rs ...[2]byte) *charset {
	var c charset
	c.add(extra)
	for _, r := range rs {
		c.addRange(r[0], r[1])
	}
	return &c
}

var (
	csDigits = set("0123456789")
	// What apr prints for an address and port: IPv4, IPv6 (inet_ntop writes lowercase hex,
	// which keeps "%a" apart from a message's "AH" code), the port.
	csAddr   = ranges(".:%", [2]byte{'0', '9'}, [2]byte{'a', 'f'})
	csLevel  = ranges("", [2]byte{'a', 'z'}, [2]byte{'0', '9'})
	csModule = ranges("_-.", [2]byte{'a', 'z'}, [2]byte{'A', 'Z'}, [2]byte{'0', '9'})
	csLogID  = ranges("+/", [2]byte{'a', 'z'}, [2]byte{'A', 'Z'}, [2]byte{'0', '9'})
	csFile   = ranges("_-.", [2]byte{'a', 'z'}, [2]byte{'A', 'Z'}, [2]byte{'0', '9'})
	// csFileFirst: source files start with a letter or '_' (httpd's and mod_ssl's all do),
	// which tells "%F" apart from a thread id or a port.
	csFileFirst = ranges("_", [2]byte{'a', 'z'}, [2]byte{'A', 'Z'})
	csHost      = ranges("_-.", [2]byte{'a', 'z'}, [2]byte{'A', 'Z'}, [2]byte{'0', '9'})
	csUpper     = ranges("", [2]byte{'A', 'Z'})
	csSign      = set("+-")
	// csMessage: an event's message starts with its AH code.
	csMessage = set("A")
)

// levelNum is Apache's level order (APLOG_EMERG 0 ... APLOG_TRACE8 15), for %7F conditions.
var levelNum = map[string]int{
	"emerg": 0, "alert": 1, "crit": 2, "error": 3, "warn": 4, "notice": 5, "info": 6, "debug": 7,
	"trace1": 8, "trace2": 9, "trace3": 10, "trace4": 11, "trace5": 12, "trace6": 13, "trace7": 14, "trace8": 15,
}

// rawItem is one item as Apache's parse_errorlog_item reads it.
type rawItem struct {
	sep      bool // starts a field
	lit      []byte
	verb     byte // 0 for constant text
	arg      string
	hasArg   bool
	hyphen   bool
	required bool
	minLevel int
}

// lexFormat splits spec into items the way server/core.c parse_errorlog_string does, with
// its error for what Apache itself refuses.
func lexFormat(spec string) ([]rawItem, error) {
	var out []rawItem
	s := spec
	for len(s) > 0 {
		var it rawItem
		var err error
		s, err = lexItem(&it, s)
		if err != nil {
			return nil, err
		}
		if it.required {
			return nil, fmt.Errorf("uses the '+' flag (%s), which Apache refuses in the main error log format", it)
		}
		if it.minLevel > 15 {
			return nil, fmt.Errorf("has a level condition out of range (%d)", it.minLevel)
		}
		out = append(out, it)
	}
	return out, nil
}

func lexItem(it *rawItem, s string) (string, error) {
	if len(s) == 0 || s[0] != '%' {
		if len(s) > 0 && s[0] == ' ' {
			it.sep = true
		}
		// Constant text: a space after non-space text ends it, to start the next field.
		atStart := true
		var lit []byte
		for len(s) > 0 && s[0] != '%' && (s[0] != ' ' || atStart) {
			if s[0] != '\\' {
				if s[0] != ' ' {
					atStart = false
				}
				lit = append(lit, s[0])
				s = s[1:]
				continue
			}
			s = s[1:]
			if len(s) == 0 {
				lit = append(lit, '\\')
				break
			}
			switch s[0] {
			case 'r':
				lit = append(lit, '\r')
			case 'n':
				lit = append(lit, '\n')
			case 't':
				lit = append(lit, '\t')
			default:
				lit = append(lit, s[0])
			}
			s = s[1:]
		}
		it.lit = lit
		return s, nil
	}
	s = s[1:]
	if len(s) > 0 && s[0] == ' ' { // "% " starts a field and writes nothing
		it.sep = true
		return lexItem(it, s[1:])
	}
	if len(s) > 0 && s[0] == '%' {
		it.lit = []byte("%")
		return s[1:], nil
	}
	for len(s) > 0 {
		switch c := s[0]; {
		case c == '{':
			s = s[1:]
			i := strings.IndexByte(s, '}')
			if i < 0 {
				it.arg, it.hasArg, s = s, true, ""
				continue
			}
			it.arg, it.hasArg = s[:i], true
			s = strings.TrimLeft(s[i:], "}") // ap_getword skips repeated stop characters
		case c == '+':
			it.required = true
			s = s[1:]
		case c == '-':
			it.hyphen = true
			s = s[1:]
		case c >= '0' && c <= '9':
			n := 0
			for len(s) > 0 && s[0] >= '0' && s[0] <= '9' {
				if n < 1000 {
					n = n*10 + int(s[0]-'0')
				}
				s = s[1:]
			}
			it.minLevel = n
		default:
			if !strings.ContainsRune("aAeEFiklLmnPtTvVM", rune(c)) {
				return s, fmt.Errorf("uses %%%c, which this parser does not know (Apache's own directives are a A e E F i k l L m n P t T v V M)", c)
			}
			it.verb = c
			return s[1:], nil
		}
	}
	return s, fmt.Errorf("ends inside a %% directive")
}

func (r rawItem) String() string {
	s := "%"
	if r.hyphen {
		s += "-"
	}
	if r.minLevel > 0 {
		s += fmt.Sprint(r.minLevel)
	}
	if r.hasArg {
		s += "{" + r.arg + "}"
	}
	return s + string(r.verb)
}

// ParseFormat compiles an ErrorLogFormat, given as Apache sees it after unquoting the
// directive's argument. See Format for what it accepts and refuses, and why.
func ParseFormat(spec string) (*Format, error) {
	f, err := parseFormat(spec)
	if err != nil {
		return nil, &FormatError{Spec: spec, Msg: err.Error()}
	}
	return f, nil
}

func parseFormat(spec string) (*Format, error) {
	raws, err := lexFormat(spec)
	if err != nil {
		return nil, err
	}
	// Group into fields; compile each item.
	var groups [][]item
	msgField, msgAt := -1, -1
	for _, r := range raws {
		it, err := compileItem(r)
		if err != nil {
			return nil, err
		}
		if r.sep || len(groups) == 0 {
			groups = append(groups, nil)
		}
		g := len(groups) - 1
		if it.kind == itMsg {
			if msgField >= 0 {
				return nil, fmt.Errorf("has %%M twice")
			}
			msgField, msgAt = g, len(groups[g])
		}
		groups[g] = append(groups[g], it)
	}
	if msgField < 0 {
		return nil, fmt.Errorf("has no %%M (message)")
	}
	var need struct{ time, module, level bool }
	f := &Format{spec: spec, lastTime: -1}
	if msgField > maxFields {
		return nil, fmt.Errorf("has more than %d fields before %%M", maxFields)
	}
	for i, items := range groups[:msgField] {
		fd := field{items: items}
		for _, it := range items {
			if it.kind == itClientText {
				return nil, fmt.Errorf("has %s before %%M: a client controls its text, so its lines cannot be parsed safely", it.name)
			}
			fd.minLevel = fd.minLevel || it.minLevel > 0
			fd.maybe = fd.maybe || it.maybe && !it.hyphen
		}
		fd.optional = fd.minLevel || fd.maybe
		for _, it := range items {
			switch it.kind {
			case itTime:
				need.time = true
				f.lastTime = i
			case itModule:
				need.module = true
			case itLevel:
				need.level = true
			}
			if fd.optional && (it.kind == itTime || it.kind == itModule || it.kind == itLevel) {
				return nil, fmt.Errorf("has %s in a field that Apache leaves out when %s; put a space or \"%% \" between them", it.name, whyOptional(items))
			}
		}
		fd.lead = leadOf(items)
		f.fields = append(f.fields, fd)
	}
	mitems := groups[msgField]
	f.pre = mitems[:msgAt]
	for _, it := range f.pre {
		switch {
		case it.kind == itClientText:
			return nil, fmt.Errorf("has %s before %%M: a client controls its text, so its lines cannot be parsed safely", it.name)
		case it.minLevel > 0:
			return nil, fmt.Errorf("has a level condition (%s) in the field of %%M; put a space or \"%% \" before %%M", it.name)
		}
		f.preOpt = f.preOpt || it.maybe && !it.hyphen
	}
	// A format without spaces (JSON-style, with "%-E" and "%-a") is one field: the message's.
	for _, it := range f.pre {
		switch it.kind {
		case itTime:
			need.time = true
		case itModule:
			need.module = true
		case itLevel:
			need.level = true
		default:
			continue
		}
		if f.preOpt {
			return nil, fmt.Errorf("has %s in the field of %%M, which Apache cuts down to the message when %s; put a space or \"%% \" before %%M", it.name, whyOptional(f.pre))
		}
	}
	f.preLead = leadOf(append(append([]item(nil), f.pre...), item{kind: itMsg}))
	switch {
	case !need.time:
		return nil, fmt.Errorf("has no %%t (time) before %%M")
	case !need.module:
		return nil, fmt.Errorf("has no %%m (module) before %%M")
	case !need.level:
		return nil, fmt.Errorf("has no %%l (level) before %%M")
	}
	if err := f.checkTimeParts(); err != nil {
		return nil, err
	}
	// The fixed tail after the message.
	post := mitems[msgAt+1:]
	if f.preOpt && len(post) > 0 {
		return nil, fmt.Errorf("has text after %%M in its field, and that field's other directives can be empty; put a space or \"%% \" after %%M")
	}
	for _, it := range post {
		switch {
		case it.kind == itLit:
			f.suffix = append(f.suffix, it.lit...)
		case it.request && it.hyphen && it.minLevel == 0:
			f.suffix = append(f.suffix, '-')
		case it.request && it.minLevel == 0:
			return nil, fmt.Errorf("has %s in the field of %%M: Apache would erase the message with it; put a space or \"%% \" before it", it.name)
		default:
			return nil, fmt.Errorf("has %s after %%M; only text and request items (%%{...}i, %%{...}e, %%{...}n, %%V, %%L) can follow the message", it.name)
		}
	}
	for _, items := range groups[msgField+1:] {
		var text []byte
		erased := false
		for _, it := range items {
			switch {
			case it.kind == itLit:
				text = append(text, it.lit...)
			case it.request && it.minLevel == 0:
				if it.hyphen {
					text = append(text, '-')
				} else {
					erased = true
				}
			default:
				return nil, fmt.Errorf("has %s after %%M; only text and request items (%%{...}i, %%{...}e, %%{...}n, %%V, %%L) can follow the message", it.name)
			}
		}
		if !erased {
			f.suffix = append(f.suffix, text...)
		}
	}
	if err := f.checkUnambiguous(); err != nil {
		return nil, err
	}
	f.needle = f.prefilter()
	return f, nil
}

func whyOptional(items []item) string {
	for _, it := range items {
		if it.minLevel > 0 {
			return "the line's level does not meet " + it.name
		}
		if it.maybe && !it.hyphen {
			return it.name + " is empty"
		}
	}
	return "a directive is empty"
}

func compileItem(r rawItem) (item, error) {
	it := item{hyphen: r.hyphen, minLevel: r.minLevel, name: r.String()}
	switch r.verb {
	case 0:
		it.kind, it.lit = itLit, r.lit
		it.name = fmt.Sprintf("%q", r.lit)
	case 't':
		tf, err := compileTime(r.arg, r.hasArg)
		if err != nil {
			return it, fmt.Errorf("time %s: %v", it.name, err)
		}
		it.kind, it.tf = itTime, tf
	case 'm':
		it.kind, it.cs = itModule, csModule
	case 'l':
		it.kind, it.cs = itLevel, csLevel
	case 'P':
		it.kind, it.cs = itPid, csDigits
	case 'T':
		// %T is the pthread id, empty on a non-threaded MPM (prefork: checked); %{g}T is
		// gettid(2), which Linux always answers (server/log.c log_tid).
		it.kind, it.cs, it.maybe = itTid, csDigits, !(r.hasArg && r.arg == "g")
	case 'E':
		it.kind, it.maybe = itStatus, true
	case 'a':
		it.kind, it.cs, it.maybe = itClient, csAddr, true
	case 'A':
		it.kind, it.cs, it.maybe = itAddr, csAddr, true
	case 'k':
		it.kind, it.cs, it.maybe = itDigits, csDigits, true
	case 'L':
		it.kind, it.cs, it.maybe = itLogID, csLogID, true
		// Without c/C it is the request's log id: none on a stapling line.
		it.request = !(r.hasArg && (r.arg == "c" || r.arg == "C"))
	case 'F':
		it.kind, it.cs = itFile, csFile
	case 'v':
		it.kind, it.cs, it.maybe = itHost, csHost, true
	case 'i', 'e', 'n', 'V':
		it.kind, it.maybe, it.request = itClientText, true, true
	case 'M':
		it.kind = itMsg
	}
	return it, nil
}

// first is the set of bytes item can start with.
func (it *item) first() charset {
	var c charset
	switch it.kind {
	case itLit:
		if len(it.lit) > 0 {
			c.add(string(it.lit[:1]))
		}
		return c
	case itTime:
		c = tFirst(it.tf)
	case itStatus:
		c.add("(")
	case itMsg:
		return *csMessage
	case itFile:
		c = *csFileFirst
	default:
		c = *it.cs
	}
	if it.hyphen {
		c.add("-")
	}
	return c
}

// leadOf is a field's leading constant text and the first bytes of what comes next.
func leadOf(items []item) lead {
	var l lead
	for _, it := range items {
		if it.kind == itLit {
			l.lit = append(l.lit, it.lit...)
			continue
		}
		l.next = it.first()
		return l
	}
	return l
}

// firstOf is the set of bytes a run of items can start with ("" items skipped).
func firstOf(items []item) (charset, bool) {
	for i := range items {
		if items[i].kind == itLit && len(items[i].lit) == 0 {
			continue
		}
		return items[i].first(), true
	}
	return charset{}, false
}

// follow is every way the line can go on after field i (pre-message fields; len(f.fields)
// is the message's field), as leads: up to and including the first field always written.
func (f *Format) follow(i int) []lead {
	var out []lead
	for k := i + 1; k < len(f.fields); k++ {
		out = append(out, f.fields[k].lead)
		if !f.fields[k].optional {
			return out
		}
	}
	out = append(out, f.preLead)
	return out
}

// eventProbe is how the message field of an event line starts after its own leading text:
// an optional field must not be able to swallow it.
var eventProbe = []byte("AH01941: stapling_renew_response: responder error")

// swallows reports whether items parse on the start of an event's message field, that is
// whether Apache leaving this field out could make us read the message's code as its text.
func (f *Format) swallows(items []item) bool {
	probe := append(append([]byte(nil), leadOf(f.pre).lit...), eventProbe...)
	var p parts
	_, ok := parseItems(items, probe, 0, &p)
	if !ok && f.preOpt {
		_, ok = parseItems(items, eventProbe, 0, &p)
	}
	return ok
}

// conflict reports whether a line could start with both leads.
func conflict(a, b lead) bool {
	switch {
	case len(a.lit) == len(b.lit):
		return bytes.Equal(a.lit, b.lit) && a.next.meets(b.next)
	case len(a.lit) < len(b.lit):
		return bytes.HasPrefix(b.lit, a.lit) && a.next.has(b.lit[len(a.lit)])
	default:
		return bytes.HasPrefix(a.lit, b.lit) && b.next.has(a.lit[len(b.lit)])
	}
}

// checkUnambiguous proves the two things the parser relies on: an optional field's lead
// never matches what may follow in its place, and each directive read by its byte set
// (digits for %P, address bytes for %a ...) is followed by a byte outside that set.
func (f *Format) checkUnambiguous() error {
	firstAfter := func(i int) charset { // bytes that may follow field i
		var c charset
		for _, l := range f.follow(i) {
			if len(l.lit) > 0 {
				c.add(string(l.lit[:1]))
			} else {
				c = c.union(l.next)
			}
		}
		return c
	}
	check := func(items []item, after charset) error {
		for j := range items {
			it := &items[j]
			next := after
			if c, ok := firstOf(items[j+1:]); ok {
				next = c
			}
			switch {
			case it.kind == itStatus:
				if j+1 >= len(items) || items[j+1].kind != itLit || len(items[j+1].lit) == 0 {
					return fmt.Errorf("has %s not followed by text in its field (as in \"%%E: \"), so the end of the status text cannot be found", it.name)
				}
			case it.cs != nil && it.kind != itFile: // %F ends at its ")"
				own := *it.cs
				if it.hyphen {
					own.add("-")
				}
				if own.meets(next) {
					return fmt.Errorf("has %s followed by something that can start with a byte %s itself can contain, so its end cannot be found", it.name, it.name)
				}
			}
		}
		return nil
	}
	for i := range f.fields {
		fd := &f.fields[i]
		if fd.optional {
			follow := f.follow(i)
			if i+len(follow) == len(f.fields) { // reaches the message field
				follow = follow[:len(follow)-1]
				if f.swallows(fd.items) {
					return fmt.Errorf("has a field (%s) that Apache may leave out and that can read the start of the message as its own text", names(fd.items))
				}
			}
			for _, l := range follow {
				if conflict(fd.lead, l) {
					return fmt.Errorf("has a field (%s) that Apache may leave out and that can start like what follows it, so a line cannot be parsed unambiguously", names(fd.items))
				}
			}
			if len(fd.lead.lit) == 0 && fd.lead.next == (charset{}) {
				return fmt.Errorf("has a field (%s) that Apache may leave out with nothing to recognise it by", names(fd.items))
			}
		}
		if err := check(fd.items, firstAfter(i)); err != nil {
			return err
		}
	}
	if f.preOpt && f.swallows(f.pre) {
		return fmt.Errorf("has a field before %%M (%s) that Apache may leave out and that can start like the message", names(f.pre))
	}
	return check(f.pre, *csMessage)
}

func names(items []item) string {
	var s []string
	for _, it := range items {
		s = append(s, it.name)
	}
	return strings.Join(s, " ")
}

// prefilter is the text around the first %m as an event line has it: the constant text
// next to it in its field, which Apache always writes whole, and "ssl".
func (f *Format) prefilter() []byte {
	for _, fd := range append(f.fields, field{items: f.pre}) {
		for j, it := range fd.items {
			if it.kind != itModule {
				continue
			}
			var n []byte
			if j > 0 && fd.items[j-1].kind == itLit {
				n = append(n, fd.items[j-1].lit...)
			}
			n = append(n, "ssl"...)
			if j+1 < len(fd.items) && fd.items[j+1].kind == itLit {
				n = append(n, fd.items[j+1].lit...)
			}
			return n
		}
	}
	return []byte("ssl")
}

// String is the format as given to ParseFormat.
func (f *Format) String() string {
	if f == nil {
		return "(Apache's default ErrorLogFormat)"
	}
	return f.spec
}

// parts is what a line's header holds.
type parts struct {
	tp                                  timeParts
	module, level, pid, tid, status, cl []byte
	absent                              uint64 // fields left out
	msg                                 []byte
}

// parse reads line's fields from its first byte. With timeOnly it stops after the last
// field holding a time.
func (f *Format) parse(line []byte, p *parts, timeOnly bool) bool {
	pos := 0
	for i := range f.fields {
		fd := &f.fields[i]
		n, ok := parseItems(fd.items, line, pos, p)
		if !ok {
			if !fd.optional {
				return false
			}
			p.absent |= 1 << i // left out by Apache (checkUnambiguous: nothing else fits)
			continue
		}
		pos = n
		if timeOnly && i >= f.lastTime {
			return true
		}
	}
	if timeOnly && f.lastTime >= 0 {
		return false
	}
	if n, ok := parseItems(f.pre, line, pos, p); ok {
		pos = n
	} else if !f.preOpt {
		return false
	}
	if timeOnly { // the time is in the message's field
		return true
	}
	if !bytes.HasSuffix(line[pos:], f.suffix) {
		return false
	}
	p.msg = line[pos : len(line)-len(f.suffix)]
	return true
}

// parseItems reads items from line[pos:] and returns where they end. On failure p is as it was.
func parseItems(items []item, line []byte, pos int, p *parts) (int, bool) {
	saved := *p
	n, ok := parseItemsAt(items, line, pos, p)
	if !ok {
		*p = saved
	}
	return n, ok
}

func parseItemsAt(items []item, line []byte, pos int, p *parts) (int, bool) {
	for j := range items {
		it := &items[j]
		rest := line[pos:]
		switch it.kind {
		case itLit:
			if !bytes.HasPrefix(rest, it.lit) {
				return 0, false
			}
			pos += len(it.lit)
			continue
		case itTime:
			n, ok := parseTimeItem(it.tf, rest, &p.tp)
			if !ok {
				return 0, false
			}
			pos += n
			continue
		case itStatus:
			if it.hyphen && len(rest) > 0 && rest[0] == '-' && bytes.HasPrefix(rest[1:], items[j+1].lit) {
				pos++
				continue
			}
			if len(rest) < 3 || rest[0] != '(' {
				return 0, false
			}
			end := bytes.IndexByte(rest, ')')
			if end < 2 {
				return 0, false
			}
			text := bytes.Index(rest[end:], items[j+1].lit)
			if text < 0 {
				return 0, false
			}
			p.status = rest[1:end]
			pos += end + text
			continue
		}
		n := it.cs.span(rest)
		val := rest[:n]
		if it.kind == itFile {
			if n > 0 && !csFileFirst.has(rest[0]) {
				return 0, false
			}
			// file.c(line)
			if n == 0 || n >= len(rest) || rest[n] != '(' {
				if it.hyphen && n == 1 && val[0] == '-' {
					pos++
					continue
				}
				return 0, false
			}
			d := csDigits.span(rest[n+1:])
			if d == 0 || n+1+d >= len(rest) || rest[n+1+d] != ')' {
				return 0, false
			}
			pos += n + d + 2
			continue
		}
		if n == 0 {
			if !it.hyphen || len(rest) == 0 || rest[0] != '-' {
				return 0, false
			}
			n, val = 1, nil
		} else if it.hyphen && n == 1 && val[0] == '-' {
			val = nil
		}
		switch it.kind {
		case itModule:
			p.module = val
		case itLevel:
			p.level = val
		case itPid:
			p.pid = val
		case itTid:
			p.tid = val
		case itClient:
			p.cl = val
		}
		pos += n
	}
	return pos, true
}

// Time is the time of a line (with or without its newline) in this format, for the history
// scan's window search; a nil Format reads Apache's default format.
func (f *Format) Time(line []byte) (time.Time, bool) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte{'\n'}), []byte{'\r'})
	if f == nil {
		if ts, _, ok := cutTimestamp(line); ok {
			return parseTime(ts)
		}
		return time.Time{}, false
	}
	if len(line) > MaxLineLen {
		return time.Time{}, false
	}
	var p parts
	if !f.parse(line, &p, true) {
		return time.Time{}, false
	}
	return p.tp.time()
}

// Classify is Classify for a line in this format: the same events, with the same strictness
// (every field up to the message exactly as Apache writes it, the module "ssl", the code at
// message position). A nil Format is Apache's default format.
func (f *Format) Classify(line []byte) Event {
	if f == nil {
		return Classify(line)
	}
	if len(line) > MaxLineLen {
		return Event{}
	}
	line = bytes.TrimSuffix(line, []byte{'\r'})
	var p parts
	if !f.parse(line, &p, false) {
		return Event{}
	}
	info, ok := codeAt(p.msg)
	if !ok || string(p.module) != "ssl" {
		return Event{}
	}
	lv, ok := levelNum[string(p.level)]
	if !ok || !isLower(p.level) {
		return Event{}
	}
	// Level conditions (%7F): a field is written only when the line's level meets every one
	// in it, and a field left out for no other reason must have missed one.
	for i := range f.fields {
		fd := &f.fields[i]
		if !fd.minLevel {
			continue
		}
		absent := p.absent&(1<<i) != 0
		missed := false
		for _, it := range fd.items {
			missed = missed || it.minLevel > lv
		}
		if !absent && missed || absent && !missed && !fd.maybe {
			return Event{}
		}
	}
	if p.status != nil && !isStatus(p.status) || p.cl != nil && !isAddr(p.cl) {
		return Event{}
	}
	if len(p.pid) > 20 || len(p.tid) > 24 {
		return Event{}
	}
	t, ok := p.tp.time()
	if !ok {
		return Event{}
	}
	// Proc as the default format writes it: "P", "P:tid T"; "tid T" when only %T is logged.
	var pb [64]byte
	proc := append(pb[:0], p.pid...)
	if len(p.tid) > 0 {
		if len(proc) > 0 {
			proc = append(proc, ':')
		}
		proc = append(append(proc, "tid "...), p.tid...)
	}
	return newEvent(info, t, p.msg, p.level, proc, p.status)
}

// Time formats: %t renders through ap_recent_ctime_ex with option letters, or strftime.

type tKind uint8

const (
	tLit     tKind = iota
	tWday          // "Sun"
	tMonName       // "Nov"
	tYear          // 4 digits
	tMon           // 2 digits
	tDay           // 2 digits
	tDaySp         // strftime %e: space-padded
	tHour
	tMin
	tSec
	tMsec // ".ddd", or nothing: Apache before 2.4.6x ignores the 'm' letter
	tUsec // ".dddddd"
	tOff  // "+hhmm"
)

type tElem struct {
	kind tKind
	lit  byte
}

// compileTime turns a %t argument into the layout Apache writes. Letters (server/log.c
// log_ctime): u microseconds, m milliseconds (u wins), c compact "YYYY-MM-DD hh:mm:ss",
// z " +hhmm"; other letters are ignored, as Apache ignores them ("%{msec_frac}t" is m and
// c). An argument with '%' is a strftime format (seconds only, local time).
func compileTime(arg string, hasArg bool) ([]tElem, error) {
	lit := func(s string) []tElem {
		var e []tElem
		for i := 0; i < len(s); i++ {
			e = append(e, tElem{tLit, s[i]})
		}
		return e
	}
	k := func(ks ...tKind) []tElem {
		var e []tElem
		for _, x := range ks {
			e = append(e, tElem{kind: x})
		}
		return e
	}
	join := func(parts ...[]tElem) []tElem {
		var e []tElem
		for _, p := range parts {
			e = append(e, p...)
		}
		return e
	}
	hms := join(k(tHour), lit(":"), k(tMin), lit(":"), k(tSec))
	if !hasArg || !strings.Contains(arg, "%") {
		usec, msec, compact, off := strings.Contains(arg, "u"), strings.Contains(arg, "m"), strings.Contains(arg, "c"), strings.Contains(arg, "z")
		var frac []tElem
		switch {
		case usec:
			frac = k(tUsec)
		case msec:
			frac = k(tMsec)
		}
		var e []tElem
		if compact {
			e = join(k(tYear), lit("-"), k(tMon), lit("-"), k(tDay), lit(" "), hms, frac)
		} else {
			e = join(k(tWday), lit(" "), k(tMonName), lit(" "), k(tDay), lit(" "), hms, frac, lit(" "), k(tYear))
		}
		if off {
			e = join(e, lit(" "), k(tOff))
		}
		return e, nil
	}
	var e []tElem
	for i := 0; i < len(arg); i++ {
		if arg[i] != '%' {
			e = append(e, tElem{tLit, arg[i]})
			continue
		}
		i++
		if i == len(arg) {
			return nil, fmt.Errorf("ends with a lone %%")
		}
		switch arg[i] {
		case 'Y':
			e = join(e, k(tYear))
		case 'm':
			e = join(e, k(tMon))
		case 'd':
			e = join(e, k(tDay))
		case 'e':
			e = join(e, k(tDaySp))
		case 'H':
			e = join(e, k(tHour))
		case 'M':
			e = join(e, k(tMin))
		case 'S':
			e = join(e, k(tSec))
		case 'T':
			e = join(e, hms)
		case 'R':
			e = join(e, k(tHour), lit(":"), k(tMin))
		case 'F':
			e = join(e, k(tYear), lit("-"), k(tMon), lit("-"), k(tDay))
		case 'b', 'h':
			e = join(e, k(tMonName))
		case 'a':
			e = join(e, k(tWday))
		case 'z':
			e = join(e, k(tOff))
		case '%':
			e = join(e, lit("%"))
		case 'n':
			e = join(e, lit("\n"))
		case 't':
			e = join(e, lit("\t"))
		default:
			return nil, fmt.Errorf("uses %%%c, which this parser does not read (it reads %%Y %%m %%d %%e %%H %%M %%S %%T %%F %%R %%b %%h %%a %%z)", arg[i])
		}
	}
	if len(e) == 0 {
		return nil, fmt.Errorf("is empty")
	}
	return e, nil
}

func tFirst(e []tElem) charset {
	var c charset
	switch e[0].kind {
	case tLit:
		c.add(string([]byte{e[0].lit}))
	case tWday, tMonName:
		c = *csUpper
	case tMsec, tUsec:
		c.add(".")
	case tOff:
		c = *csSign
	case tDaySp:
		c = *csDigits
		c.add(" ")
	default:
		c = *csDigits
	}
	return c
}

// timeParts collects what the time items of one line say; each part may be given more than
// once (two %t items) but must then agree.
type timeParts struct {
	have                                 uint16
	year, mon, day, hour, min, sec, nsec int
	off                                  int // seconds east of UTC
}

const (
	hYear = 1 << iota
	hMon
	hDay
	hHour
	hMin
	hSec
	hNsec
	hOff
	hAll = hYear | hMon | hDay | hHour | hMin | hSec
)

func (tp *timeParts) put(bit uint16, dst *int, v int) bool {
	if tp.have&bit != 0 && *dst != v {
		return false
	}
	tp.have |= bit
	*dst = v
	return true
}

func (tp *timeParts) time() (time.Time, bool) {
	if tp.have&hAll != hAll || tp.day < 1 || tp.day > 31 || tp.mon < 1 || tp.mon > 12 || tp.hour > 23 || tp.min > 59 || tp.sec > 60 {
		return time.Time{}, false
	}
	if tp.have&hOff != 0 {
		t := time.Date(tp.year, time.Month(tp.mon), tp.day, tp.hour, tp.min, tp.sec, tp.nsec, time.UTC)
		return t.Add(-time.Duration(tp.off) * time.Second).In(timeLoc), true
	}
	return time.Date(tp.year, time.Month(tp.mon), tp.day, tp.hour, tp.min, tp.sec, tp.nsec, timeLoc), true
}

// checkTimeParts: the time items together must give the date and the time to the second.
func (f *Format) checkTimeParts() error {
	var have uint16
	for _, fd := range append(f.fields, field{items: f.pre}) {
		for _, it := range fd.items {
			for _, e := range it.tf {
				have |= map[tKind]uint16{tYear: hYear, tMon: hMon, tMonName: hMon, tDay: hDay, tDaySp: hDay, tHour: hHour, tMin: hMin, tSec: hSec}[e.kind]
			}
		}
	}
	if have&hAll != hAll {
		return fmt.Errorf("has no %%t giving the year, month, day, hour, minute and second")
	}
	return nil
}

var wdays = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// parseTimeItem reads one time item at the start of b and returns its length.
func parseTimeItem(layout []tElem, b []byte, tp *timeParts) (int, bool) {
	pos := 0
	digits := func(n int) (int, bool) {
		if pos+n > len(b) {
			return 0, false
		}
		v, ok := num(b[pos : pos+n])
		if !ok || (n == 2 && b[pos] == ' ') {
			return 0, false
		}
		pos += n
		return v, true
	}
	for _, e := range layout {
		var ok bool
		var v int
		switch e.kind {
		case tLit:
			if pos >= len(b) || b[pos] != e.lit {
				return 0, false
			}
			pos++
			continue
		case tWday:
			if pos+3 > len(b) {
				return 0, false
			}
			w := string(b[pos : pos+3])
			ok = false
			for _, d := range wdays {
				ok = ok || d == w
			}
			if !ok {
				return 0, false
			}
			pos += 3
			continue
		case tMonName:
			if pos+3 > len(b) {
				return 0, false
			}
			var m time.Month
			if m, ok = months[string(b[pos:pos+3])]; !ok || !tp.put(hMon, &tp.mon, int(m)) {
				return 0, false
			}
			pos += 3
			continue
		case tYear:
			v, ok = digits(4)
			ok = ok && tp.put(hYear, &tp.year, v)
		case tMon:
			v, ok = digits(2)
			ok = ok && tp.put(hMon, &tp.mon, v)
		case tDay:
			v, ok = digits(2)
			ok = ok && tp.put(hDay, &tp.day, v)
		case tDaySp:
			if pos+2 > len(b) {
				return 0, false
			}
			v, ok = num(b[pos : pos+2]) // num accepts a leading space in a 2-byte number
			pos += 2
			ok = ok && tp.put(hDay, &tp.day, v)
		case tHour:
			v, ok = digits(2)
			ok = ok && tp.put(hHour, &tp.hour, v)
		case tMin:
			v, ok = digits(2)
			ok = ok && tp.put(hMin, &tp.min, v)
		case tSec:
			v, ok = digits(2)
			ok = ok && tp.put(hSec, &tp.sec, v)
		case tMsec, tUsec:
			n := 3
			if e.kind == tUsec {
				n = 6
			}
			if pos+n >= len(b) || b[pos] != '.' || !isDigits(b[pos+1:pos+1+n]) {
				if e.kind == tMsec {
					continue
				}
				return 0, false
			}
			pos++
			v, ok = digits(n)
			if n == 3 {
				v *= 1000
			}
			ok = ok && tp.put(hNsec, &tp.nsec, v*1000)
		case tOff:
			if pos+5 > len(b) || (b[pos] != '+' && b[pos] != '-') {
				return 0, false
			}
			hh, ok1 := num(b[pos+1 : pos+3])
			mm, ok2 := num(b[pos+3 : pos+5])
			if !ok1 || !ok2 || b[pos+1] == ' ' || b[pos+3] == ' ' || hh > 23 || mm > 59 {
				return 0, false
			}
			v = hh*3600 + mm*60
			if b[pos] == '-' {
				v = -v
			}
			pos += 5
			ok = tp.put(hOff, &tp.off, v)
		}
		if !ok {
			return 0, false
		}
	}
	return pos, true
}
