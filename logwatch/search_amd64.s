#include "textflag.h"

// func findAVX2(s []byte, n int, b0, b1, bl byte, last int, out []int32) (newlines, found, reached int)
//
// For each 64-byte block of s[:n] (n a multiple of 64, n+last <= len(s)): counts the '\n'
// bytes, and appends to out every position i with s[i] == b0, s[i+1] == b1 and
// s[i+last] == bl. Stops before a block when fewer than 64 slots are left in out.
TEXT ·findAVX2(SB), NOSPLIT, $0-96
	MOVQ	s_base+0(FP), SI
	MOVQ	n+24(FP), BX
	MOVQ	last+40(FP), R8
	MOVQ	out_base+48(FP), DX
	MOVQ	out_len+56(FP), CX
	SUBQ	$64, CX          // a block adds at most 64 positions
	VPBROADCASTB	b0+32(FP), Y0
	VPBROADCASTB	b1+33(FP), Y1
	VPBROADCASTB	bl+34(FP), Y2
	MOVQ	$0x0a, R10
	MOVQ	R10, X6
	VPBROADCASTB	X6, Y6
	LEAQ	(SI)(R8*1), R9   // s[last:]
	XORQ	AX, AX           // found
	XORQ	DI, DI           // block start
	// Newlines are counted per byte lane in Y10 (a match is -1; VPSUBB adds 1), at most 2
	// a block, so Y10 is summed into the four quadwords of Y11 every 127 blocks.
	VPXOR	Y10, Y10, Y10
	VPXOR	Y11, Y11, Y11
	VPXOR	Y12, Y12, Y12
	MOVQ	$127, R13
loop:
	CMPQ	DI, BX
	JGE	done
	CMPQ	AX, CX
	JGT	done
	DECQ	R13
	JNZ	body
	VPSADBW	Y12, Y10, Y13
	VPADDQ	Y13, Y11, Y11
	VPXOR	Y10, Y10, Y10
	MOVQ	$127, R13
body:
	VMOVDQU	(SI)(DI*1), Y3
	VMOVDQU	32(SI)(DI*1), Y8
	VPCMPEQB	Y6, Y3, Y7
	VPCMPEQB	Y6, Y8, Y9
	VPSUBB	Y7, Y10, Y10
	VPSUBB	Y9, Y10, Y10
	VPCMPEQB	Y0, Y3, Y3
	VPCMPEQB	Y0, Y8, Y8
	VPCMPEQB	1(SI)(DI*1), Y1, Y4
	VPCMPEQB	33(SI)(DI*1), Y1, Y9
	VPAND	Y4, Y3, Y3
	VPAND	Y9, Y8, Y8
	VPCMPEQB	(R9)(DI*1), Y2, Y5
	VPCMPEQB	32(R9)(DI*1), Y2, Y9
	VPAND	Y5, Y3, Y3
	VPAND	Y9, Y8, Y8
	VPOR	Y3, Y8, Y9
	VPTEST	Y9, Y9
	JNZ	hits
next:
	ADDQ	$64, DI
	JMP	loop
hits:
	VPMOVMSKB	Y3, R10
	VPMOVMSKB	Y8, R11
	SHLQ	$32, R11
	ORQ	R11, R10
hit:
	BSFQ	R10, R11
	ADDQ	DI, R11
	MOVL	R11, (DX)(AX*4)
	INCQ	AX
	LEAQ	-1(R10), R11     // clear the lowest set bit
	ANDQ	R11, R10
	JNZ	hit
	JMP	next
done:
	VPSADBW	Y12, Y10, Y13
	VPADDQ	Y13, Y11, Y11
	VEXTRACTI128	$1, Y11, X13
	VPADDQ	X13, X11, X11
	VPSHUFD	$0x4e, X11, X13
	VPADDQ	X13, X11, X11
	MOVQ	X11, R12
	MOVQ	R12, newlines+72(FP)
	MOVQ	AX, found+80(FP)
	MOVQ	DI, reached+88(FP)
	VZEROUPPER
	RET

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL	eaxArg+0(FP), AX
	MOVL	ecxArg+4(FP), CX
	CPUID
	MOVL	AX, eax+8(FP)
	MOVL	BX, ebx+12(FP)
	MOVL	CX, ecx+16(FP)
	MOVL	DX, edx+20(FP)
	RET

// func xgetbv() (eax uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-4
	MOVL	$0, CX
	XGETBV
	MOVL	AX, eax+0(FP)
	RET
