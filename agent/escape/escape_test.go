package escape

import "testing"

func TestLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":                  "plain text",
		"two\nlines\r\n":              "two lines",
		"  runs \t of   space  ":      "runs of space",
		"\x1b[2J\x1b[31mred":          `\x1b[2J\x1b[31mred`,
		"bell\a and nul\x00":          `bell\x07 and nul\x00`,
		"bad utf8 \xff\xfe":           `bad utf8 \xff\xfe`,
		"line\u2028separator":         `line\u{2028}separator`,
		"c1 control \u009b31m":        `c1 control \x9b31m`,
		"ünïcödé stays":               "ünïcödé stays",
		"ocsp.example.net|perfdata=1": "ocsp.example.net|perfdata=1",
		"":                            "",
	} {
		if got := Line(in); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
}
