/* halt_forever: interrupts on, nothing programmed to interrupt: would wait forever. */
#include "common.inc"
	.globl _start
_start:
	sti
1:	hlt
	jmp 1b
