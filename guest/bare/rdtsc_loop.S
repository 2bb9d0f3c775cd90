/* rdtsc_loop: 3000 rdtsc and 1000 rdtscp, folded into a checksum kept in
 * memory and printed: the replay must hand back the recorded values. */
#include "common.inc"
	.globl _start
_start:
	mov $3000, %r12
	xor %r13, %r13
1:	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	xor %rax, %r13
	rol $7, %r13
	mov %r13, sum(%rip)
	dec %r12
	jnz 1b
	mov $1000, %r12
2:	rdtscp
	shl $32, %rdx
	or %rdx, %rax
	xor %rax, %r13
	rol $3, %r13
	mov %r13, sum(%rip)
	dec %r12
	jnz 2b
	puts msg
	mov sum(%rip), %rax
	putdec_rax
	puts nl
	exit 0
	hlt
#include "lib.inc"
	.balign 8
sum:	.quad 0
msg:	.asciz "rdtsc_loop: sum="
nl:	.asciz "\n"
