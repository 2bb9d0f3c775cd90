/* loop: 5,000,000 iterations with no exits at all, then exit 7. */
#include "common.inc"
	.globl _start
_start:
	mov $5000000, %rcx
	xor %rax, %rax
1:	add %rcx, %rax
	dec %rcx
	jnz 1b
	exit 7
	hlt
