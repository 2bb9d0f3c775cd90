/* rep_movs: copies a 64 KiB buffer back and forth with rep movsb while a
 * 1 kHz PIT interrupts, so interrupts land inside rep movs; the handler
 * counts ticks and stamps the tick number into the buffer. Ends after 10
 * ticks and prints a checksum of the buffer. */
#include "common.inc"
	.set BUF_A, 0x200000
	.set BUF_B, 0x300000
	.set LEN, 0x10000
	.globl _start
_start:
	call _idt_init
	gate 0x20, tick
	mov $0xfffe, %ax
	call _pic_init
	mov $1193, %ax			/* 1 kHz */
	call _pit_periodic
	sti
1:	mov $BUF_A, %rsi
	mov $BUF_B, %rdi
	mov $LEN, %rcx
	rep movsb
	mov $BUF_B, %rsi
	mov $BUF_A + 1, %rdi
	mov $LEN - 1, %rcx
	rep movsb
	cmpq $10, ticks(%rip)
	jb 1b
	cli
	mov $BUF_A, %rsi
	mov $LEN / 8, %rcx
	xor %rax, %rax
2:	add (%rsi), %rax
	rol $1, %rax
	add $8, %rsi
	loop 2b
	push %rax
	puts msg
	pop %rax
	putdec_rax
	puts nl
	exit 0
	hlt
tick:	push %rax
	push %rbx
	incq ticks(%rip)
	mov ticks(%rip), %rax
	mov %rsi, %rbx
	and $0xffff, %rbx
	mov %al, BUF_A(%rbx)
	mov $0x20, %al
	out %al, $0x20
	pop %rbx
	pop %rax
	iretq
#include "lib.inc"
	.balign 8
ticks:	.quad 0
msg:	.asciz "rep_movs: sum="
nl:	.asciz "\n"
