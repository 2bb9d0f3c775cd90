/* memloop: increments RAX and stores it to memory, forever in lockstep:
 * at any instruction boundary the stored counter is RAX or RAX-1. Tests
 * kick it and compare registers with memory. Exits after 5 M iterations. */
#include "common.inc"
	.globl _start, counter
_start:
	xor %eax, %eax
	mov $5000000, %rcx
1:	inc %rax
	mov %rax, counter(%rip)
	dec %rcx
	jnz 1b
	exit 0
	hlt
	.balign 8
counter: .quad 0
