/* chatter: a bare guest that prints LINES numbered lines, reading the TSC
 * (a logged, nondeterministic input) and spinning SPIN iterations before
 * each, then exits with status 0. Its output does not depend on the TSC
 * values, so every run prints the same thing: the FT tests compare the
 * console output of a pair that failed over with an undisturbed run's.
 * With TICKS defined it also runs the PIT at 1 kHz with an interrupt
 * handler that counts ticks (asynchronous deliveries: replay landmarks).
 * With IDLE (and TICKS) it halts until SPIN ticks have passed instead of
 * spinning: a mostly idle guest, like a server between requests. */
	.code64
	.set COM1, 0x3f8
	.set EXIT_PORT, 0xf4
	.set IDT_BASE, 0x80000
	.globl _start
_start:
#ifdef TICKS
	/* IDT: every gate -> ignore, vector 0x20 -> tick. */
	mov $IDT_BASE, %rdi
	xor %ecx, %ecx
0:	lea ignore(%rip), %rax
	cmp $0x20, %ecx
	jne 9f
	lea tick(%rip), %rax
9:	mov %ax, (%rdi)
	movw $0x08, 2(%rdi)
	movw $0x8e00, 4(%rdi)
	shr $16, %rax
	mov %ax, 6(%rdi)
	shr $16, %rax
	mov %eax, 8(%rdi)
	movl $0, 12(%rdi)
	add $16, %rdi
	inc %ecx
	cmp $256, %ecx
	jne 0b
	lidt idtr(%rip)
	/* PIC: ICW1..4, vectors 0x20/0x28, only IRQ0 unmasked. */
	mov $0x11, %al
	out %al, $0x20
	out %al, $0xa0
	mov $0x20, %al
	out %al, $0x21
	mov $0x28, %al
	out %al, $0xa1
	mov $4, %al
	out %al, $0x21
	mov $2, %al
	out %al, $0xa1
	mov $1, %al
	out %al, $0x21
	out %al, $0xa1
	mov $0xfe, %al
	out %al, $0x21
	mov $0xff, %al
	out %al, $0xa1
	/* PIT channel 0, mode 2, 1193 -> ~1 kHz. */
	mov $0x34, %al
	out %al, $0x43
	mov $(1193 & 0xff), %al
	out %al, $0x40
	mov $(1193 >> 8), %al
	out %al, $0x40
	sti
#endif
	mov $LINES, %r12
	xor %r13, %r13
1:	inc %r13
	rdtsc
	xor %rax, %r14
#ifdef IDLE
	mov ticks(%rip), %rax
	add $SPIN, %rax
2:	hlt
	cmp ticks(%rip), %rax
	ja 2b
#else
	mov $SPIN, %rcx
2:	dec %rcx
	jnz 2b
#endif
	lea msg(%rip), %rsi
	call puts
	mov %r13, %rax
	call putdec
	mov $'\n', %al
	call putc
	dec %r12
	jnz 1b
	cli
	mov $0, %al
	out %al, $EXIT_PORT
	hlt

/* puts: RSI -> NUL-terminated string. */
puts:	lodsb
	test %al, %al
	jz 1f
	call putc
	jmp puts
1:	ret

/* putc: AL -> COM1, after polling LSR.THRE. */
putc:	push %rdx
	push %rax
	mov $COM1+5, %dx
1:	in %dx, %al
	test $0x20, %al
	jz 1b
	pop %rax
	mov $COM1, %dx
	out %al, %dx
	pop %rdx
	ret

/* putdec: RAX in decimal. */
putdec:	push %rbx
	push %rdx
	push %rcx
	mov $10, %rbx
	xor %ecx, %ecx
1:	xor %edx, %edx
	div %rbx
	add $'0', %dl
	push %rdx
	inc %ecx
	test %rax, %rax
	jnz 1b
2:	pop %rax
	call putc
	dec %ecx
	jnz 2b
	pop %rcx
	pop %rdx
	pop %rbx
	ret

#ifdef TICKS
tick:	push %rax
	incq ticks(%rip)
	mov $0x20, %al
	out %al, $0x20
	pop %rax
	iretq
ignore:	iretq
	.balign 8
idtr:	.word 256*16-1
	.quad IDT_BASE
ticks:	.quad 0
#endif
msg:	.asciz "chatter line "
