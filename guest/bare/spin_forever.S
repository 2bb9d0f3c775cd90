/* spin_forever: a loop with no exit and no end (for cancellation tests). */
#include "common.inc"
	.globl _start
_start:
1:	jmp 1b
