/* virtio_hostile: attacks the first virtio-blk device (vmm.AddVirtio, blk.Attachment:
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

#include "virtio.inc"
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
	call negotiate
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

#include "virtio_lib.inc"
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
