/* triple_fault: an empty IDT and an invalid opcode: #UD cannot be
 * delivered, nor #GP, nor #DF, so the vCPU shuts down. */
#include "common.inc"
	.globl _start
_start:
	lidt idtr(%rip)
	ud2
	exit 0
	.balign 8
idtr:	.word 0
	.quad 0
