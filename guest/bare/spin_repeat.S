/* spin_repeat: a loop whose registers repeat exactly (it only changes
 * memory), interrupted by a 1 kHz PIT: a replay can tell its iterations
 * apart only by the pages written. Ends after 12 ticks; prints the count. */
#include "common.inc"
	.globl _start
_start:
	call _idt_init
	gate 0x20, tick
	mov $0xfffe, %ax
	call _pic_init
	mov $1193, %ax			/* 1 kHz */
	call _pit_periodic
	sti
1:	incq spins(%rip)
	cmpq $12, ticks(%rip)
	jb 1b
	cli
	puts msg
	mov spins(%rip), %rax
	putdec_rax
	puts nl
	exit 0
	hlt
tick:	push %rax
	incq ticks(%rip)
	mov $0x20, %al
	out %al, $0x20
	pop %rax
	iretq
#include "lib.inc"
	.balign 8
ticks:	.quad 0
spins:	.quad 0
msg:	.asciz "spin_repeat: spins="
nl:	.asciz "\n"
