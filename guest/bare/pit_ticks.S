/* pit_ticks: the PIT at 100 Hz on IRQ0 through the PIC, a handler counting
 * ticks while the guest spins in a loop without exits until it has counted
 * TARGET ticks (a loop's length is no clock: how fast it runs depends on
 * the host); prints the loops spun and the ticks seen. */
#include "common.inc"
	.set TARGET, 5
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
	xor %rcx, %rcx
	sti
1:	inc %rcx
	cmpq $TARGET, ticks(%rip)
	jb 1b
	cli
	push %rcx
	puts msg_loops
	pop %rax
	putdec_rax
	puts msg_ticks
	mov ticks(%rip), %rax
	putdec_rax
	puts msg_spurious
	mov spurious_count(%rip), %rax
	putdec_rax
	puts msg_nl
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
	incq spurious_count(%rip)
	iretq

#include "lib.inc"
	.balign 8
ticks:	.quad 0
spurious_count: .quad 0
msg_loops: .asciz "pit_ticks: loops="
msg_ticks: .asciz " ticks="
msg_spurious: .asciz " spurious="
msg_nl: .asciz "\n"
