package logwatch

import "bytes"

// candBatch is how many candidate positions the vector kernel hands back per call: enough
// that a buffer of ordinary log (a few candidates per thousand lines) takes one call, small
// enough to live on the stack.
const candBatch = 256

var newline = []byte{'\n'}

// findAll calls visit with every offset at which needle (at least 2 bytes) occurs in data,
// in increasing order, and returns the number of '\n' bytes in data: what a bytes.Index loop
// and bytes.Count give, in one pass over memory.
//
// Why not bytes.Index: it runs IndexByte for the needle's first byte and compares there, and
// the bytes of every needle we have ("[ssl:", or the text around "ssl" in a custom format)
// are on every log line several times over ('[' five times on a cPanel line), so it spends its
// time returning from IndexByte. The kernel (findBlocks; AVX2 on amd64) tests the needle's
// first, second and last byte at every position of a 32-byte block at once, as ripgrep's
// memchr crate does with its "packed pair", and counts newlines in the same pass; only the
// rare positions where all three match are compared in full. Where there is no kernel
// (another architecture, a CPU without AVX2) or for the bytes it leaves at the end, the loop
// below is that bytes.Index loop and bytes.Count.
func findAll(data, needle []byte, visit func(int)) int64 {
	var out [candBatch]int32
	var lines int64
	pos := 0
	for len(needle) >= 2 {
		nl, found, reached := findBlocks(data[pos:], needle, out[:])
		if reached == 0 {
			break
		}
		lines += int64(nl)
		for _, c := range out[:found] {
			if i := pos + int(c); bytes.HasPrefix(data[i:], needle) {
				visit(i)
			}
		}
		pos += reached
	}
	lines += int64(bytes.Count(data[pos:], newline))
	for off := pos; off < len(data); {
		i := bytes.Index(data[off:], needle)
		if i < 0 {
			break
		}
		visit(off + i)
		off += i + 1
	}
	return lines
}
