package logwatch

import "testing"

// The portable path on amd64 too (a CPU without AVX2 takes it): the same search and stream
// tests with the kernel switched off. No test here runs in parallel with them: haveAVX2 is
// package state.
func TestFindAllWithoutAVX2(t *testing.T) {
	defer func(had bool) { haveAVX2 = had }(haveAVX2)
	haveAVX2 = false
	t.Run("block edges", TestFindAllBlockEdges)
	t.Run("dense", TestFindAllDenseAndNearMisses)
	t.Run("random", TestFindAllRandom)
	t.Run("stream", TestScanStreamAgreesWithClassifyingEveryLine)
	t.Run("stream format", TestScanStreamFormatAgreesWithClassifyingEveryLine)
}
