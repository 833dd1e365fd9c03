package remediate

import (
	"bytes"
	"fmt"
	"strings"
)

// unifiedDiff renders the single contiguous change ApplyBlock or RemoveBlock makes as a
// one-hunk unified diff with up to three lines of context.
func unifiedDiff(name string, a, b []byte, existed bool) string {
	al, bl := splitLines(a), splitLines(b)
	pre := 0
	for pre < len(al) && pre < len(bl) && al[pre] == bl[pre] {
		pre++
	}
	suf := 0
	for suf < len(al)-pre && suf < len(bl)-pre && al[len(al)-1-suf] == bl[len(bl)-1-suf] {
		suf++
	}
	ctx := 3
	from := max(pre-ctx, 0)
	aEnd, bEnd := len(al)-suf, len(bl)-suf
	aTo, bTo := min(aEnd+ctx, len(al)), min(bEnd+ctx, len(bl))
	var sb strings.Builder
	src := "--- " + name
	if !existed {
		src = "--- /dev/null"
	}
	fmt.Fprintf(&sb, "%s\n+++ %s\n@@ -%s +%s @@\n", src, name, hunkRange(from, aTo), hunkRange(from, bTo))
	emit := func(prefix string, lines []string) {
		for _, l := range lines {
			sb.WriteString(prefix)
			sb.WriteString(strings.TrimRight(l, "\r\n"))
			sb.WriteByte('\n')
			if !strings.HasSuffix(l, "\n") {
				sb.WriteString("\\ No newline at end of file\n")
			}
		}
	}
	emit(" ", al[from:pre])
	emit("-", al[pre:aEnd])
	emit("+", bl[pre:bEnd])
	emit(" ", al[aEnd:aTo])
	return sb.String()
}

func hunkRange(from, to int) string {
	n := to - from
	start := from + 1
	if n == 0 {
		start = from
	}
	return fmt.Sprintf("%d,%d", start, n)
}

func splitLines(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, string(b))
			break
		}
		out = append(out, string(b[:i+1]))
		b = b[i+1:]
	}
	return out
}
