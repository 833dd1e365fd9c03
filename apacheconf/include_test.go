package apacheconf

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// TestApplyBlockGolden applies the block to each testdata/include/*.conf and compares with
// the .applied golden file; then checks what Apache would read from the result.
func TestApplyBlockGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/include/*.conf")
	if err != nil || len(files) == 0 {
		t.Fatalf("no include samples: %v", err)
	}
	// wantChange: whether ApplyBlock must change the file; the rest must be left alone
	// because stapling is already off at global scope.
	wantChange := map[string]bool{
		"empty": true, "plain": true, "no-final-newline": true, "crlf": true,
		"crlf-no-final-newline": true, "admin-off": false, "admin-off-repeated": false,
		"admin-off-ifmodule-lowercase": false, "off-then-on": true, "commented-off": true,
		"off-in-vhost": true, "off-in-negated-ifmodule": true, "off-swallowed-by-comment": true,
		"block-overridden-later": true, "block-edited-by-hand": false,
		"continuation": true, "continuation-no-final-newline": true, "continuation-crlf": true,
		"continuation-crlf-no-final-newline": true, "continuation-comment": true,
		"block-after-continuation-overridden-later": true,
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".conf")
		t.Run(name, func(t *testing.T) {
			want, ok := wantChange[name]
			if !ok {
				t.Fatalf("sample %s has no expectation in wantChange", name)
			}
			in, _ := os.ReadFile(f)
			out, changed := ApplyBlock(in)
			if changed != want {
				t.Fatalf("ApplyBlock changed = %v, want %v", changed, want)
			}
			if !InspectInclude(out).StaplingOff {
				t.Fatalf("after ApplyBlock stapling is not off at global scope:\n%s", out)
			}
			if changed {
				if !InspectInclude(out).ManagedBlock {
					t.Fatalf("after ApplyBlock our block is not found:\n%s", out)
				}
				if err := blockStandsAlone(out); err != nil {
					t.Fatal(err)
				}
			}
			golden := strings.TrimSuffix(f, ".conf") + ".applied"
			if *update {
				os.WriteFile(golden, out, 0o644)
			}
			g, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if !bytes.Equal(out, g) {
				t.Fatalf("ApplyBlock output differs from %s:\n got %q\nwant %q", golden, out, g)
			}
			again, changed := ApplyBlock(out)
			if changed || !bytes.Equal(again, out) {
				t.Fatalf("second ApplyBlock changed the file")
			}
		})
	}
}

// TestApplyThenRemoveRestoresBytes: whatever ApplyBlock adds above the block (a final newline,
// a blank line ending a continuation, both) RemoveBlock takes away again, and the block is
// read by Apache as its own statements.
func TestApplyThenRemoveRestoresBytes(t *testing.T) {
	for _, in := range []string{
		"", "a", "a\n", "a\r\n", "a\r\nb", "a\r", "\n", "x \\", "SSLUseStapling on",
		// The last line continues (lex's rule: backslash last after trimming spaces, tabs, CR).
		"x \\\n", "x \\\r\n", "a\r\nx \\", "a\r\nx \\\r\n", "x \\\r", "x \\ \t\n", "\\\n", "\\",
		"x \\\\\n", "KeepAliveTimeout \\\n  5 \\\n",
		// A comment ending in a backslash continues too: the join comes before "#" is seen.
		"# note \\\n", "# note \\", "  # note \\\r\n",
		// A backslash that does not end the last line is no continuation.
		"x \\\ny\n", "x \\y\n",
	} {
		out, changed := ApplyBlock([]byte(in))
		if !changed {
			t.Fatalf("%q: ApplyBlock did not change it", in)
		}
		if err := blockStandsAlone(out); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !InspectInclude(out).StaplingOff || !InspectInclude(out).ManagedBlock {
			t.Fatalf("%q: after ApplyBlock: %+v", in, InspectInclude(out))
		}
		if again, changed := ApplyBlock(out); changed || !bytes.Equal(again, out) {
			t.Fatalf("%q: second ApplyBlock changed %q to %q", in, out, again)
		}
		back, ok := RemoveBlock(out)
		if !ok || string(back) != in {
			t.Fatalf("%q: RemoveBlock(ApplyBlock) = %q, %v", in, back, ok)
		}
	}
}

// TestApplyBlockMarkers: the begin marker says what was added above the block.
func TestApplyBlockMarkers(t *testing.T) {
	cases := []struct{ in, above, marker string }{
		{"x\n", "", beginMarker},
		{"x", "\n", beginMarkerNL},
		{"x \\\n", "\n", beginMarkerCont},
		{"x \\\r\n", "\r\n", beginMarkerCont},
		{"# note \\\n", "\n", beginMarkerCont},
		{"x \\", "\n\n", beginMarkerNLCont},
		{"a\r\nx \\", "\r\n\r\n", beginMarkerNLCont},
	}
	for _, c := range cases {
		out, _ := ApplyBlock([]byte(c.in))
		want := c.in + c.above + c.marker
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("%q: ApplyBlock = %q, want it to start with %q", c.in, out, want)
		}
	}
}

// blockStandsAlone checks that Apache (as lex reads it) sees our block as its own statements:
// the text before it reads the same with or without the block after it (so no line of the
// block is joined onto the admin's last line), the block adds exactly its three statements,
// and SSLUseStapling off is read on the block's own line.
func blockStandsAlone(out []byte) error {
	start, _, ok := findBlock(out)
	if !ok {
		return fmt.Errorf("no block in %q", out)
	}
	before, all := lex(out[:start]), lex(out)
	if len(all) != len(before)+3 {
		return fmt.Errorf("block did not add 3 statements: %q", out)
	}
	for i, s := range before {
		if fmt.Sprint(s) != fmt.Sprint(all[i]) {
			return fmt.Errorf("statement %d reads %v before the block and %v with it: %q", i, s, all[i], out)
		}
	}
	line := bytes.Count(out[:start], []byte("\n")) + 3 // the begin marker's line, then two
	st := all[len(before)+1]
	if st.Line != line || st.Name != directiveName || len(st.Args) != 1 || st.Args[0] != "off" {
		return fmt.Errorf("want SSLUseStapling off on line %d, got %+v: %q", line, st, out)
	}
	return nil
}

func TestRemoveBlockLeavesHandEditedBlock(t *testing.T) {
	in, _ := os.ReadFile("testdata/include/block-edited-by-hand.conf")
	if _, ok := RemoveBlock(in); ok {
		t.Fatal("RemoveBlock removed a block whose body an admin edited")
	}
	if InspectInclude(in).ManagedBlock {
		t.Fatal("a hand-edited block counts as ours")
	}
}

func TestRemoveBlockMovedBlockKeepsAdminLines(t *testing.T) {
	in, _ := os.ReadFile("testdata/include/block-overridden-later.conf")
	out, _ := ApplyBlock(in)
	back, ok := RemoveBlock(out)
	if !ok {
		t.Fatal("no block after apply")
	}
	if want := "KeepAlive On\nSSLUseStapling on\n"; string(back) != want {
		t.Fatalf("got %q, want %q", back, want)
	}
}

// TestRemoveBlockKeepsLaterLinesApart: once the admin has written lines after our block, the
// line endings ApplyBlock added above it separate the admin's lines and stay; removing them
// would join the later line onto the one before it.
func TestRemoveBlockKeepsLaterLinesApart(t *testing.T) {
	cases := []struct{ in, want string }{
		{"x", "x\nSSLUseStapling on\n"},
		{"KeepAliveTimeout 5 \\\n", "KeepAliveTimeout 5 \\\n\nSSLUseStapling on\n"},
		{"KeepAliveTimeout 5 \\", "KeepAliveTimeout 5 \\\n\nSSLUseStapling on\n"},
	}
	for _, c := range cases {
		applied, _ := ApplyBlock([]byte(c.in))
		later := append(applied, "SSLUseStapling on\n"...)
		back, ok := RemoveBlock(later)
		if !ok || string(back) != c.want {
			t.Errorf("%q: RemoveBlock = %q, %v; want %q", c.in, back, ok, c.want)
		}
		if st := InspectInclude(back); st.Global != "on" {
			t.Errorf("%q: after RemoveBlock the admin's line reads as %+v", c.in, st)
		}
	}
}

func TestInspectInclude(t *testing.T) {
	cases := []struct {
		name, in, global string
	}{
		{"unset", "KeepAlive On\n", ""},
		{"last wins", "SSLUseStapling off\nSSLUseStapling On\n", "on"},
		{"quoted", "SSLUseStapling \"off\"\n", "off"},
		{"continuation", "SSLUseStapling \\\n  off\n", "off"},
		{"indented comment", "   # SSLUseStapling off\n", ""},
		{"in directory", "<Directory />\nSSLUseStapling off\n</Directory>\n", ""},
		{"nested ifmodule, as cPanel's template", "<IfModule ssl_module>\n<IfModule socache_shmcb_module>\nSSLUseStapling off\n</IfModule>\n</IfModule>\n", "off"},
		{"ifmodule the include alone cannot know", "<IfModule a>\n<IfModule b>\nSSLUseStapling off\n</IfModule>\n</IfModule>\n", ""},
		{"ifmodule mod_ssl: no module of that name", "<IfModule mod_ssl>\nSSLUseStapling off\n</IfModule>\n", ""},
		{"ifversion the include alone cannot know", "<IfVersion >= 2.4>\nSSLUseStapling off\n</IfVersion>\n", ""},
		{"after closed vhost", "<VirtualHost *:443>\nSSLUseStapling on\n</VirtualHost>\nSSLUseStapling off\n", "off"},
		{"two args ignored", "SSLUseStapling off on\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := InspectInclude([]byte(c.in)).Global; got != c.global {
				t.Fatalf("Global = %q, want %q", got, c.global)
			}
		})
	}
}

// FuzzIncludeEditor: for any content, applying twice equals applying once, the result turns
// stapling off or is unchanged, a block we add is read as its own statements (never joined
// onto a continued last line) with SSLUseStapling off on the block's line, and when the
// content held no block of ours, removing the block gives back the original bytes exactly.
func FuzzIncludeEditor(f *testing.F) {
	files, _ := filepath.Glob("testdata/include/*.conf")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte("a\r"))
	f.Add([]byte("x \\\r"))
	f.Add([]byte("# c \\ \t"))
	f.Fuzz(func(t *testing.T, in []byte) {
		once, changed := ApplyBlock(in)
		twice, _ := ApplyBlock(once)
		if !bytes.Equal(once, twice) {
			t.Fatalf("apply twice != apply once\nin    %q\nonce  %q\ntwice %q", in, once, twice)
		}
		if !changed && !bytes.Equal(once, in) {
			t.Fatalf("unchanged but different bytes")
		}
		if changed {
			if err := blockStandsAlone(once); err != nil {
				t.Fatalf("in %q: %v", in, err)
			}
		}
		if _, _, had := findBlock(in); had || !changed {
			return
		}
		back, ok := RemoveBlock(once)
		if !ok || !bytes.Equal(back, in) {
			t.Fatalf("revert(apply(x)) != x\nin   %q\nout  %q\nback %q", in, once, back)
		}
	})
}
