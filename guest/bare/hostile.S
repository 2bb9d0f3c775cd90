/* hostile: writes pseudo-random garbage at every width to every legacy
 * device port (PIC, PIT, port 0x61, i8042 data, CMOS, ELCR, UART) and reads
 * them back, 20000 times; the VMM must survive and the guest exits 0.
 * Port 0x64 (i8042 command) and 0xf4 are left alone: they end the run. */
#include "common.inc"
	.globl _start
_start:
	mov $0x2545F4914F6CDD1D, %r8	/* LCG state */
	mov $6364136223846793005, %r10
	mov $1442695040888963407, %r11
	mov $20000, %r9
1:	imul %r10, %r8
	add %r11, %r8
	mov %r8, %rax
	shr $33, %rax
	xor %edx, %edx
	mov $nports, %ecx
	div %ecx			/* edx = index into ports */
	lea ports(%rip), %rsi
	movzwl (%rsi,%rdx,2), %edx
	mov %r8, %rax
	shr $13, %rax
	mov %r8, %rbx
	shr $60, %rbx
	and $3, %ebx
	cmp $0, %ebx
	je 2f
	cmp $1, %ebx
	je 3f
	cmp $2, %ebx
	je 4f
	in %dx, %al
	in %dx, %ax
	in %dx, %eax
	jmp 5f
2:	out %al, %dx
	jmp 5f
3:	out %ax, %dx
	jmp 5f
4:	out %eax, %dx
5:	dec %r9
	jnz 1b
	exit 0
	hlt
	.balign 2
ports:	.word 0x20, 0x21, 0xa0, 0xa1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x60
	.word 0x70, 0x71, 0x4d0, 0x4d1, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x80
	.set nports, (. - ports) / 2
