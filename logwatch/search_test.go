package logwatch

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// naiveFind is findAll's definition: every offset of needle, and the newline count.
func naiveFind(data, needle []byte) ([]int, int64) {
	var at []int
	for i := 0; i+len(needle) <= len(data); i++ {
		if bytes.Equal(data[i:i+len(needle)], needle) {
			at = append(at, i)
		}
	}
	return at, int64(bytes.Count(data, newline))
}

func checkFind(t *testing.T, data, needle []byte) {
	t.Helper()
	var got []int
	lines := findAll(data, needle, func(i int) { got = append(got, i) })
	want, wantLines := naiveFind(data, needle)
	if fmt.Sprint(got) != fmt.Sprint(want) || lines != wantLines {
		t.Fatalf("needle %q in %d bytes: got %v and %d newlines, want %v and %d", needle, len(data), got, lines, want, wantLines)
	}
}

var testNeedles = [][]byte{candidate, []byte(" [ssl:"), []byte(" ssl"), []byte("ssl"), []byte(`{"module":"ssl","time":"`), []byte("aa")}

// Every needle at every offset around the kernel's 64-byte blocks, in buffers of every length
// around them: the first and last positions the kernel tests, the ones it leaves to the
// portable loop, and a needle cut off by the end of the data.
func TestFindAllBlockEdges(t *testing.T) {
	for _, needle := range testNeedles {
		for n := 0; n <= 200; n++ {
			for _, at := range []int{0, 1, 31, 32, 58, 59, 60, 63, 64, 65, 127, 128, n - len(needle), n - len(needle) + 1, n - 1} {
				if at < 0 || at >= n {
					continue
				}
				data := bytes.Repeat([]byte("x\n[sl:s["), n/8+1)[:n]
				copy(data[at:], needle)
				checkFind(t, data, needle)
			}
		}
	}
}

// More occurrences than one kernel call hands back (candBatch), overlapping ones, and
// near misses that match the three bytes the kernel tests but not the rest.
func TestFindAllDenseAndNearMisses(t *testing.T) {
	checkFind(t, bytes.Repeat(candidate, 3*candBatch), candidate)
	checkFind(t, bytes.Repeat([]byte("a"), 1000), []byte("aa"))
	checkFind(t, bytes.Repeat([]byte("[sxx:\n"), 5000), candidate)                       // first, second, last byte match
	checkFind(t, bytes.Repeat([]byte("[s\n"), 5000), []byte(`{"module":"ssl","time":"`)) // nothing
	checkFind(t, nil, candidate)
}

func TestFindAllRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("[ssl:]\n x")
	for range 2000 {
		data := make([]byte, r.IntN(600))
		for i := range data {
			data[i] = alphabet[r.IntN(len(alphabet))]
		}
		for _, needle := range testNeedles {
			checkFind(t, data, needle)
		}
	}
}

func FuzzFindAll(f *testing.F) {
	f.Add([]byte("[Sat Nov 21 17:02:00.000001 2026] [ssl:error] [pid 1] AH01941: x\n"), "[ssl:")
	f.Add([]byte(strings.Repeat("[ssl:", 100)), "sl:[s")
	f.Fuzz(func(t *testing.T, data []byte, needle string) {
		if len(needle) < 2 {
			return
		}
		checkFind(t, data, []byte(needle))
	})
}
