/* counter: counts PIT ticks at 100 Hz while spinning, printing
 * "counter N" once for each tick up to TICKS, then exits 0. Its output
 * depends only on the ticks it has seen, never on how fast it spins: a
 * run saved (ftvm run --snapshot) and restored prints the same lines as
 * one that was never stopped. */
#include "common.inc"
	.set TICKS, 300
	.set DIVISOR, 11932		/* 1193182 Hz / 100 */
	.globl _start
_start:
	call _idt_init
	gate 0x20, tick
	gate 0x27, spurious
	mov $0xfffe, %ax		/* only IRQ0 unmasked */
	call _pic_init
	mov $DIVISOR, %ax
	call _pit_periodic
	sti
1:	mov ticks(%rip), %rax
	cmp printed(%rip), %rax
	je 1b
	incq printed(%rip)
	puts msg
	mov printed(%rip), %rax
	putdec_rax
	puts nl
	cmpq $TICKS, printed(%rip)
	jb 1b
	cli
	exit 0
	hlt

tick:
	push %rax
	incq ticks(%rip)
	mov $0x20, %al
	out %al, $0x20			/* non-specific EOI */
	pop %rax
	iretq

spurious:
	iretq

#include "lib.inc"
	.balign 8
ticks:	.quad 0
printed: .quad 0
msg:	.asciz "counter "
nl:	.asciz "\n"
