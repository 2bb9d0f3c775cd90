/* dma: drives the DMA test device (vmm.AddDMATest: MMIO at DMA_BASE, IRQ5).
 * 24 transfers of 4 KiB into a buffer, each waited for with hlt until the
 * device's interrupt, then checksummed (the data is the backend's, so the
 * checksum differs from run to run but not between a run and its replay);
 * a 1 kHz PIT and a compute loop after each start keep interrupts (the
 * timer's and the device's) landing between exits. Then two
 * hostile transfers: length 0 and a destination outside RAM must each end
 * with STATUS 3. Prints the checksum, exits 0; 2 on a failed transfer, 3
 * when a hostile transfer does not fail. */
#include "common.inc"
	.set DMA_BASE, MMIO_BASE + 0x10000
	.set BUF, 0x200000
	.set ROUNDS, 24
	.globl _start
_start:
	call _idt_init
	gate 0x20, tick
	gate 0x25, dma_irq
	mov $0xffde, %ax		/* IRQ0 and IRQ5 unmasked */
	call _pic_init
	mov $1193, %ax			/* ~1 kHz */
	call _pit_periodic
	mov $DMA_BASE, %rbx
	xor %r12, %r12			/* running checksum */
	xor %r13, %r13			/* rounds done */
round:
	movq $BUF, 0x00(%rbx)
	movl $4096, 0x08(%rbx)
	call transfer
	cmpl $2, 0x10(%rbx)
	jne failed
	/* checksum: r12 = rol(r12, 1) ^ qword, over 512 qwords */
	mov $BUF, %rsi
	mov $512, %ecx
1:	rol $1, %r12
	xor (%rsi), %r12
	add $8, %rsi
	dec %ecx
	jnz 1b
	inc %r13
	cmp $ROUNDS, %r13
	jne round

	/* hostile: length 0 */
	movl $0, 0x08(%rbx)
	call transfer
	cmpl $3, 0x10(%rbx)
	jne notfailed
	/* hostile: destination far outside guest RAM */
	movabs $0x7fff00000000, %rax
	mov %rax, 0x00(%rbx)
	movl $16, 0x08(%rbx)
	call transfer
	cmpl $3, 0x10(%rbx)
	jne notfailed

	puts msg
	mov %r12, %rax
	putdec_rax
	puts nl
	exit 0
failed:
	exit 2
notfailed:
	exit 3

/* transfer: start one, compute a while (so the completion can arrive
 * between exits, at a landmark), then wait for its interrupt. */
transfer:
	cli
	mov dmacount(%rip), %r14d
	movl $1, 0x0c(%rbx)
	sti
	xor %ecx, %ecx
4:	inc %ecx
	mov %ecx, spin(%rip)
	cmp $3000, %ecx
	jne 4b
	cli
2:	cmp dmacount(%rip), %r14d
	jne 3f
	sti
	hlt
	cli
	jmp 2b
3:	ret

tick:
	push %rax
	incq ticks(%rip)
	mov $0x20, %al
	out %al, $0x20
	pop %rax
	iretq

dma_irq:
	push %rax
	incl dmacount(%rip)
	mov $0x20, %al
	out %al, $0x20
	pop %rax
	iretq

#include "lib.inc"
msg:	.asciz "dma: checksum "
nl:	.asciz "\n"
	.balign 8
ticks:	.quad 0
dmacount: .long 0
spin:	.long 0
