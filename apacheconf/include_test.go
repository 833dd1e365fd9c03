package apacheconf

import (
	"bytes"
	"flag"
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

func TestApplyThenRemoveRestoresBytes(t *testing.T) {
	for _, in := range []string{"", "a", "a\n", "a\r\n", "a\r\nb", "a\r", "\n", "x \\", "SSLUseStapling on"} {
		out, changed := ApplyBlock([]byte(in))
		if !changed {
			t.Fatalf("%q: ApplyBlock did not change it", in)
		}
		back, ok := RemoveBlock(out)
		if !ok || string(back) != in {
			t.Fatalf("%q: RemoveBlock(ApplyBlock) = %q, %v", in, back, ok)
		}
	}
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
		{"nested ifmodule", "<IfModule a>\n<IfModule b>\nSSLUseStapling off\n</IfModule>\n</IfModule>\n", "off"},
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
// stapling off or is unchanged, and when the content held no block of ours, removing the
// block gives back the original bytes exactly.
func FuzzIncludeEditor(f *testing.F) {
	files, _ := filepath.Glob("testdata/include/*.conf")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte("a\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		once, changed := ApplyBlock(in)
		twice, _ := ApplyBlock(once)
		if !bytes.Equal(once, twice) {
			t.Fatalf("apply twice != apply once\nin    %q\nonce  %q\ntwice %q", in, once, twice)
		}
		if !changed && !bytes.Equal(once, in) {
			t.Fatalf("unchanged but different bytes")
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
