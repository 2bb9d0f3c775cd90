/* int3: three breakpoints handled by the guest's own #BP handler; exits
 * with the number of times the handler ran (3). */
#include "common.inc"
	.globl _start
_start:
	call _idt_init
	gate 3, bp
	int3
	int3
	int3
	mov hits(%rip), %al
	exit_al
	hlt
bp:	incb hits(%rip)
	iretq
#include "lib.inc"
hits:	.byte 0
