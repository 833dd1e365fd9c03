package logwatch

// findAVX2 is in search_amd64.s.
//
//go:noescape
func findAVX2(s []byte, n int, b0, b1, bl byte, last int, out []int32) (newlines, found, reached int)

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax uint32)

// haveAVX2 is what findAVX2 needs: AVX2 and POPCNT, and an OS that saves the YMM registers
// (the checks golang.org/x/sys/cpu makes; copied, as openRegular is, rather than making the log
// reader depend on a module for four bits).
var haveAVX2 = func() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const popcnt, osxsave = 1 << 23, 1 << 27
	if ecx1&popcnt == 0 || ecx1&osxsave == 0 || xgetbv()&6 != 6 { // XCR0: SSE and AVX state
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}()

// findBlocks runs the vector kernel over a prefix of s, when the CPU has it: see findAll.
func findBlocks(s, needle []byte, out []int32) (newlines, found, reached int) {
	last := len(needle) - 1
	n := (len(s) - last) &^ 63
	if !haveAVX2 || n <= 0 || len(out) < 64 {
		return 0, 0, 0
	}
	return findAVX2(s, n, needle[0], needle[1], needle[last], last, out)
}
