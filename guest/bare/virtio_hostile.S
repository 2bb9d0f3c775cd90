/* virtio_hostile: attacks the first virtio-blk device (vmm.AddVirtioBlk:
 * virtio-mmio v2 at VIO, IRQ 10, left masked: the guest polls). Each step
 * starts from a device reset and the normal init (ACKNOWLEDGE|DRIVER,
 * VERSION_1 only, FEATURES_OK, queue 0 of 8 entries with its rings in
 * RING, QueueReady, DRIVER_OK), each checked, so every step also shows
 * the device recovers after a reset:
 *
 *  1. a chain whose data buffer is outside RAM (0x7fff_f000_0000; then
 *     one that wraps past 2^64) -> DEVICE_NEEDS_RESET, used ring untouched;
 *  2. a chain that loops (0 -> 1 -> 0) -> NEEDS_RESET;
 *  3. avail idx 1000 past the next entry -> NEEDS_RESET;
 *  4. a descriptor table outside RAM, then QueueReady=1 -> refused
 *     (QueueReady reads 0, or NEEDS_RESET);
 *  5. a read notified and the device reset before it completes; then a
 *     read that must complete OK (and the orphan never lands);
 *  6. LCG garbage at every width to every register and config offset,
 *     then a read that must complete OK.
 *
 * A read's data is checked against the disk the replay suite builds: byte
 * o of the disk is (o mod 256) xor (o / 512 mod 256). Each step prints
 * "virtio_hostile: step N ok" or "... step N FAILED <why>" and a failed
 * step exits with status N; all passed prints "virtio_hostile: all ok"
 * and exits 0. */
#include "common.inc"
	.set VIO, MMIO_BASE + 0x20000	/* vmm.VirtioBase */

	/* virtio-mmio registers (devices/virtio: Reg*) */
	.set R_MAGIC, 0x000
	.set R_VERSION, 0x004
	.set R_DEVICE_ID, 0x008
	.set R_DEV_FEAT, 0x010
	.set R_DEV_FEAT_SEL, 0x014
	.set R_DRV_FEAT, 0x020
	.set R_DRV_FEAT_SEL, 0x024
	.set R_QSEL, 0x030
	.set R_QNUM_MAX, 0x034
	.set R_QNUM, 0x038
	.set R_QREADY, 0x044
	.set R_QNOTIFY, 0x050
	.set R_ISR, 0x060
	.set R_IACK, 0x064
	.set R_STATUS, 0x070
	.set R_QDESC_LO, 0x080
	.set R_QDESC_HI, 0x084
	.set R_QDRV_LO, 0x090
	.set R_QDRV_HI, 0x094
	.set R_QDEV_LO, 0x0a0
	.set R_QDEV_HI, 0x0a4

	.set S_NEEDS_RESET, 0x40
	.set S_LIVE, 0x0f		/* ACK|DRIVER|FEATURES_OK|DRIVER_OK */
	.set F_NEXT, 1
	.set F_WRITE, 2
	.set QSIZE, 8

	/* guest RAM used by the driver */
	.set RING, 0x200000
	.set DESC, RING			/* 8 x 16 bytes */
	.set AVAIL, RING + 0x1000	/* flags, idx, ring[8] */
	.set USED, RING + 0x2000	/* flags, idx, ring[8] {id, len} */
	.set HDR, RING + 0x3000		/* type, reserved, sector */
	.set DATA, RING + 0x4000	/* 512 bytes */
	.set STAT, RING + 0x5000	/* status byte */
	.set RING_END, RING + 0x6000

	.set POLLS, 1000000		/* bound on the used-idx polls */
	.set AFTER_POLLS, 1000		/* polls after a completion: nothing else lands */

	/* fail_unless cc, msg: go to fail with msg unless condition cc holds
	 * (lea leaves the flags alone). */
	.macro fail_unless cc, msg
	lea \msg(%rip), %rax
	j\cc 9f
	jmp fail
9:
	.endm

	.globl _start
_start:
	call _idt_init
	mov $0xffff, %ax		/* every PIC line masked: the guest polls */
	call _pic_init
	mov $VIO, %rbx

	/* identity, once */
	mov $1, %r15d
	mov R_MAGIC(%rbx), %eax
	cmp $0x74726976, %eax
	fail_unless e, m_magic
	mov R_VERSION(%rbx), %eax
	cmp $2, %eax
	fail_unless e, m_magic
	mov R_DEVICE_ID(%rbx), %eax
	cmp $2, %eax
	fail_unless e, m_magic

/* 1: data buffer outside guest RAM */
	call dev_init
	xor %r12d, %r12d
	call build_read
	movabs $0x7ffff0000000, %rax
	mov %rax, DESC+16
	call publish
	call expect_broken
	/* and one whose end wraps past 2^64 */
	call dev_init
	call build_read
	movabs $0xffffffffffffff00, %rax
	mov %rax, DESC+16
	call publish
	call expect_broken
	call step_ok

/* 2: a chain that loops, 0 -> 1 -> 0 */
	mov $2, %r15d
	call dev_init
	call build_read
	movw $F_NEXT|F_WRITE, DESC+28
	movw $0, DESC+30		/* desc 1 goes back to 0 */
	call publish
	call expect_broken
	call step_ok

/* 3: avail idx far past the queue size */
	mov $3, %r15d
	call dev_init
	call build_read
	movw $0, AVAIL+4
	movw $1000, AVAIL+2
	movl $0, R_QNOTIFY(%rbx)
	call expect_broken
	call step_ok

/* 4: descriptor table outside guest RAM */
	mov $4, %r15d
	call dev_setup
	movl $0xfffff000, R_QDESC_LO(%rbx)
	movl $0xffff, R_QDESC_HI(%rbx)	/* 0xffff_ffff_f000 */
	movl $1, R_QREADY(%rbx)
	mov R_QREADY(%rbx), %ecx
	mov R_STATUS(%rbx), %edx
	test %ecx, %ecx
	jz 1f				/* refused: not ready */
	test $S_NEEDS_RESET, %edx
	fail_unless nz, m_ring_taken
1:	/* DRIVER_OK and a notify on the refused queue change nothing */
	movl $S_LIVE, R_STATUS(%rbx)
	movl $0, R_QNOTIFY(%rbx)
	mov R_QREADY(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_ring_taken
	movzwl USED+2, %eax
	test %eax, %eax
	fail_unless z, m_used_written
	call step_ok

/* 5: reset with a read in flight, then a read that completes */
	mov $5, %r15d
	call dev_init
	xor %r12d, %r12d
	call build_read
	call publish
	movl $0, R_STATUS(%rbx)		/* no exit between the notify and this */
	mov R_STATUS(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_reset
	call dev_init
	call build_read
	call publish
	call wait_read
	call step_ok

/* 6: garbage in every register and config offset, then a read */
	mov $6, %r15d
	call dev_init
	call garbage
	mov R_MAGIC(%rbx), %eax
	cmp $0x74726976, %eax
	fail_unless e, m_magic
	call dev_init
	mov $5, %r12d
	call build_read
	call publish
	call wait_read
	call step_ok

	puts m_all
	exit 0
	cli
	hlt

/* fail: RAX -> why; prints the step's failure and exits with its number. */
fail:
	mov %rax, %r14
	puts m_step
	mov %r15, %rax
	putdec_rax
	puts m_failed
	mov %r14, %rsi
	call _puts
	puts m_nl
	mov %r15d, %eax
	exit_al
	cli
	hlt

step_ok:
	puts m_step
	mov %r15, %rax
	putdec_rax
	puts m_ok
	ret

/* dev_setup: reset, negotiate VERSION_1, zero the rings, configure queue 0
 * (size 8, rings in RING) without making it ready. */
dev_setup:
	movl $0, R_STATUS(%rbx)
	mov R_STATUS(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_reset
	mov R_ISR(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_reset
	movl $3, R_STATUS(%rbx)		/* ACKNOWLEDGE|DRIVER */
	movl $1, R_DEV_FEAT_SEL(%rbx)
	mov R_DEV_FEAT(%rbx), %eax
	test $1, %eax			/* VERSION_1 (bit 32) */
	fail_unless nz, m_features
	movl $1, R_DRV_FEAT_SEL(%rbx)
	movl $1, R_DRV_FEAT(%rbx)
	movl $0, R_DRV_FEAT_SEL(%rbx)
	movl $0, R_DRV_FEAT(%rbx)
	movl $0x0b, R_STATUS(%rbx)	/* + FEATURES_OK */
	mov R_STATUS(%rbx), %eax
	cmp $0x0b, %eax
	fail_unless e, m_features
	/* fresh rings */
	mov $RING, %edi
	mov $(RING_END - RING) / 8, %ecx
	xor %eax, %eax
	rep stosq
	movl $0, R_QSEL(%rbx)
	mov R_QNUM_MAX(%rbx), %eax
	cmp $QSIZE, %eax
	fail_unless ae, m_qmax
	mov R_QREADY(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_reset
	movl $QSIZE, R_QNUM(%rbx)
	movl $DESC, R_QDESC_LO(%rbx)
	movl $0, R_QDESC_HI(%rbx)
	movl $AVAIL, R_QDRV_LO(%rbx)
	movl $0, R_QDRV_HI(%rbx)
	movl $USED, R_QDEV_LO(%rbx)
	movl $0, R_QDEV_HI(%rbx)
	ret

/* dev_init: dev_setup, then QueueReady and DRIVER_OK, both checked. */
dev_init:
	call dev_setup
	movl $1, R_QREADY(%rbx)
	mov R_QREADY(%rbx), %eax
	cmp $1, %eax
	fail_unless e, m_qready
	movl $S_LIVE, R_STATUS(%rbx)
	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	ret

/* build_read: a read of sector R12 in descriptors 0 (header), 1 (512
 * bytes of data) and 2 (status), not yet published. */
build_read:
	movl $0, HDR			/* VIRTIO_BLK_T_IN */
	movl $0, HDR+4
	mov %r12, HDR+8
	mov $DATA, %edi
	mov $512, %ecx
	mov $0xaa, %al
	rep stosb
	movb $0xff, STAT
	movq $HDR, DESC
	movl $16, DESC+8
	movw $F_NEXT, DESC+12
	movw $1, DESC+14
	movq $DATA, DESC+16
	movl $512, DESC+24
	movw $F_NEXT|F_WRITE, DESC+28
	movw $2, DESC+30
	movq $STAT, DESC+32
	movl $1, DESC+40
	movw $F_WRITE, DESC+44
	movw $0, DESC+46
	ret

/* publish: head 0 into the next avail slot, bump avail idx, notify. */
publish:
	movzwl AVAIL+2, %eax
	mov %eax, %ecx
	and $QSIZE-1, %ecx
	movw $0, AVAIL+4(,%rcx,2)
	inc %eax
	mov %ax, AVAIL+2
	movl $0, R_QNOTIFY(%rbx)
	ret

/* expect_broken: the device refused the ring: NEEDS_RESET with a config
 * change interrupt, nothing in the used ring, and a further notify
 * changes nothing. */
expect_broken:
	mov R_STATUS(%rbx), %eax
	test $S_NEEDS_RESET, %eax
	fail_unless nz, m_not_broken
	mov R_ISR(%rbx), %eax
	test $2, %eax
	fail_unless nz, m_no_config_irq
	movl $0, R_QNOTIFY(%rbx)
	mov R_STATUS(%rbx), %eax
	test $S_NEEDS_RESET, %eax
	fail_unless nz, m_not_broken
	movzwl USED+2, %eax
	test %eax, %eax
	fail_unless z, m_used_written
	ret

/* wait_read: poll (each poll an exit, where the completion can be
 * delivered) until the used idx reaches 1, then check the answer: head 0,
 * 513 bytes written, status OK, the used-buffer interrupt, the data of
 * sector R12; and that nothing more lands for a while. */
wait_read:
	mov $POLLS, %ecx
1:	movzwl USED+2, %eax
	cmp $1, %eax
	je 2f
	mov R_ISR(%rbx), %eax
	dec %ecx
	jnz 1b
	lea m_timeout(%rip), %rax
	jmp fail
2:	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	mov USED+4, %eax
	test %eax, %eax
	fail_unless z, m_used_id
	mov USED+8, %eax
	cmp $513, %eax
	fail_unless e, m_used_len
	movzbl STAT, %eax
	test %eax, %eax
	fail_unless z, m_blk_status
	mov R_ISR(%rbx), %eax
	test $1, %eax
	fail_unless nz, m_no_used_irq
	mov %eax, R_IACK(%rbx)
	mov R_ISR(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_no_ack
	xor %ecx, %ecx
3:	mov %ecx, %eax
	xor %r12d, %eax
	cmp DATA(%rcx), %al
	fail_unless e, m_data
	inc %ecx
	cmp $512, %ecx
	jne 3b
	mov $AFTER_POLLS, %ecx
4:	mov R_ISR(%rbx), %eax
	dec %ecx
	jnz 4b
	movzwl USED+2, %eax
	cmp $1, %eax
	fail_unless e, m_extra_used
	mov USED+12, %eax
	test %eax, %eax
	fail_unless z, m_extra_used
	ret

/* lcg: R8 = R8 * R10 + R11; RAX = its high 32 bits. */
lcg:
	imul %r10, %r8
	add %r11, %r8
	mov %r8, %rax
	shr $32, %rax
	ret

/* value: RDX = a random value, from R8 and RAX (lcg's): by RAX bits
 * 20-21, one bit, a byte, or all 64 bits (small values reach resets,
 * QueueReady, QueueNotify 0 and QueueSel 0, which random words never do). */
value:
	mov %r8, %rdx
	mov %rax, %rcx
	shr $20, %rcx
	and $3, %ecx
	jz 1f
	dec %ecx
	jz 2f
	ret
1:	and $1, %edx
	ret
2:	and $0xff, %edx
	ret

/* put: an access at window offset RDI of width 1 << (RSI & 3), a write
 * of RDX if RSI & 4, else a read. */
put:
	mov %rdx, %rax
	test $4, %esi
	jz 5f
	mov %esi, %ecx
	and $3, %ecx
	jz 1f
	dec %ecx
	jz 2f
	dec %ecx
	jz 3f
	mov %rax, (%rbx,%rdi)
	ret
1:	mov %al, (%rbx,%rdi)
	ret
2:	mov %ax, (%rbx,%rdi)
	ret
3:	mov %eax, (%rbx,%rdi)
	ret
5:	mov %esi, %ecx
	and $3, %ecx
	jz 1f
	dec %ecx
	jz 2f
	dec %ecx
	jz 3f
	mov (%rbx,%rdi), %rax
	ret
1:	mov (%rbx,%rdi), %al
	ret
2:	mov (%rbx,%rdi), %ax
	ret
3:	mov (%rbx,%rdi), %eax
	ret

/* garbage: on a live device, (a) twice over, a 32-bit write of a random
 * value (value) to every register offset 0x000..0x0fc, each read back;
 * (b) a write of random width and value at every config offset
 * 0x100..0x1ff (unaligned ones included), each read back at that width;
 * (c) 1024 accesses of random kind and value, half of them 32-bit at a
 * register offset, the others of random width anywhere in the window. */
garbage:
	mov $0x2545F4914F6CDD1D, %r8
	mov $6364136223846793005, %r10
	mov $1442695040888963407, %r11
	mov $2, %r13d
1:	xor %edi, %edi
2:	call lcg
	call value
	mov $6, %esi			/* 32-bit write */
	call put
	mov $2, %esi			/* 32-bit read */
	call put
	add $4, %edi
	cmp $0x100, %edi
	jne 2b
	dec %r13d
	jnz 1b

	mov $0x100, %edi
3:	call lcg
	mov %rax, %rsi
	shr $8, %rsi
	and $3, %esi
	or $4, %esi			/* a write of random width */
	call value
	call put
	and $3, %esi			/* read back */
	call put
	inc %edi
	cmp $0x200, %edi
	jne 3b

	mov $1024, %r13d
4:	call lcg
	mov %eax, %edi
	mov %rax, %rsi
	shr $12, %rsi
	and $7, %esi
	test $1 << 16, %eax
	jz 5f
	and $0xfc, %edi			/* half of them: a register, 32 bits */
	or $2, %esi
	jmp 6f
5:	and $0x1ff, %edi
6:	call value
	call put
	dec %r13d
	jnz 4b
	ret

#include "lib.inc"
m_step:		.asciz "virtio_hostile: step "
m_ok:		.asciz " ok\n"
m_failed:	.asciz " FAILED "
m_nl:		.asciz "\n"
m_all:		.asciz "virtio_hostile: all ok\n"
m_magic:	.asciz "no virtio-blk (magic, version or device ID)"
m_reset:	.asciz "status or interrupt status not 0 after a reset"
m_features:	.asciz "VERSION_1 not offered or FEATURES_OK refused"
m_qmax:		.asciz "QueueNumMax below 8"
m_qready:	.asciz "valid queue not ready"
m_driver_ok:	.asciz "status not ACK|DRIVER|FEATURES_OK|DRIVER_OK"
m_not_broken:	.asciz "malformed ring did not set NEEDS_RESET"
m_no_config_irq: .asciz "NEEDS_RESET without a config change interrupt"
m_used_written:	.asciz "used ring written for a refused request"
m_ring_taken:	.asciz "queue with its descriptor table outside RAM made ready"
m_timeout:	.asciz "read did not complete"
m_used_id:	.asciz "used ring entry names another head"
m_used_len:	.asciz "used ring length is not 513"
m_blk_status:	.asciz "request status not VIRTIO_BLK_S_OK"
m_no_used_irq:	.asciz "no used-buffer interrupt"
m_no_ack:	.asciz "interrupt status not cleared by InterruptACK"
m_data:		.asciz "read data is not the disk's"
m_extra_used:	.asciz "a second used entry appeared (an orphaned request landed)"
