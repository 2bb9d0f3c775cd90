/* uart_irq: interrupt-driven console input. Enables the UART's
 * received-data interrupt on IRQ4, halts until interrupts arrive, echoes
 * each byte back uppercased, and on a newline exits with the byte count. */
#include "common.inc"
	.globl _start
_start:
	call _idt_init
	gate 0x24, rx
	mov $0xffef, %ax		/* only IRQ4 unmasked */
	call _pic_init
	mov $COM1+3, %dx
	mov $0x03, %al			/* 8N1, DLAB off */
	out %al, %dx
	/* No FCR write: resetting the FIFO would drop input that already
	 * arrived, and the test feeds its input before the guest starts. */
	mov $COM1+4, %dx
	mov $0x08, %al			/* OUT2: route the interrupt */
	out %al, %dx
	mov $COM1+1, %dx
	mov $0x01, %al			/* IER: received data available */
	out %al, %dx
	sti
1:	hlt
	cmpb $0, done(%rip)
	je 1b
	cli
	mov count(%rip), %al
	exit_al
	hlt

rx:
	push %rax
	push %rdx
2:	mov $COM1+5, %dx
	in %dx, %al
	test $1, %al			/* LSR.DR */
	jz 4f
	mov $COM1, %dx
	in %dx, %al
	incb count(%rip)
	cmp $'\n', %al
	jne 3f
	movb $1, done(%rip)
3:	cmp $'a', %al
	jb 5f
	cmp $'z', %al
	ja 5f
	sub $0x20, %al
5:	out %al, %dx
	jmp 2b
4:	mov $0x20, %al
	out %al, $0x20
	pop %rdx
	pop %rax
	iretq

#include "lib.inc"
count:	.byte 0
done:	.byte 0
