/* virtio_net_hostile: attacks the first virtio-net device (vmm.AddVirtio, net.Attachment:
 * virtio-mmio v2 at VIO, IRQ 10, left masked: the guest polls), whose link
 * peer (the replay suite's) sends back every frame of kind 'E' it gets as
 * kind 'R'. Each step starts from a device reset and the normal init
 * (ACKNOWLEDGE|DRIVER, VERSION_1 only, FEATURES_OK, receiveq 0 and
 * transmitq 1 of 16 entries with their rings in RXQ and TXQ, QueueReady,
 * DRIVER_OK), each checked, and ends with a reset, the init again and a
 * round trip (a receive buffer posted, a frame sent, its echo checked in
 * the buffer): so every step also shows the device recovers.
 *
 *  1. transmit chains whose frame buffer is outside RAM, wraps past 2^64,
 *     runs past the end of RAM, or makes the chain longer than
 *     virtio.MaxChainBytes -> DEVICE_NEEDS_RESET, used ring untouched;
 *  2. a transmit chain that loops (0 -> 1 -> 0, then 0 -> 0) -> NEEDS_RESET;
 *  3. avail idx 1000 on the transmit queue -> NEEDS_RESET; then on the
 *     receive queue, which the device reads only when a frame arrives:
 *     a frame sent (it leaves), its echo breaks the device -> NEEDS_RESET;
 *  4. a receive buffer outside RAM, wrapping past 2^64, or running past
 *     the end of RAM, and a frame sent: its echo arrives -> NEEDS_RESET,
 *     nothing written;
 *  5. the descriptor table of either queue outside RAM, or wrapping past
 *     2^64, then QueueReady=1 -> refused: QueueReady reads 0, NEEDS_RESET;
 *  6. a receive buffer posted and a frame sent, and the device reset at
 *     once; then the init again, two buffers, a second frame: the echo of
 *     the first goes to the old buffer (if it came before the reset), to
 *     the new driver, or nowhere, and the second's lands; the lines
 *     "step 6: echo E|L ..." say which, for an echo at once (E) and one
 *     the peer sends 50 ms late (L);
 *  7. LCG garbage at every width to every register and config offset;
 *     the identity and the config space (MAC, link up, MTU) still read
 *     right;
 *  8. on a live device, transmit chains the device must give back unsent
 *     without breaking: 8 bytes (shorter than the virtio-net header), the
 *     header alone, a 13-byte frame, a 1519-byte one (MaxFrame+1),
 *     NEEDS_CSUM set, a GSO type set, a device-writable buffer; then
 *     receive buffers too small and driver-readable, whose frames are
 *     dropped with the chains given back empty, and a good one.
 *
 * Each step prints "virtio_net_hostile: step N ok" or "... step N FAILED
 * <why>" and a failed step exits with status N; all passed prints
 * "virtio_net_hostile: all ok, N frames echoed" (N: the 'E' and 'L' frames sent,
 * seq 1..N, which the suite checks against what its peer received) and
 * exits 0. */
#include "common.inc"
	.set VIO, MMIO_BASE + 0x20000	/* vmm.VirtioBase */
#include "virtio.inc"

	.set S_NEEDS_RESET, 0x40
	.set S_LIVE, 0x0f		/* ACK|DRIVER|FEATURES_OK|DRIVER_OK */
	.set F_NEXT, 1
	.set F_WRITE, 2
	.set QSIZE, 16
	.set RX, 0			/* queue indices */
	.set TX, 1

	/* guest RAM used by the driver: per queue, the descriptor table at
	 * +0, the avail ring at +A, the used ring at +U */
	.set RXQ, 0x200000
	.set TXQ, 0x210000
	.set A, 0x1000
	.set U, 0x2000
	.set RINGS_END, TXQ + 0x3000
	.set TXBUF, 0x220000		/* the frame to send, behind its header */
	.set RXBUF, 0x230000		/* receive buffer of head h: RXBUF + h * 0x800 */
	.set OLDRX, 0x240000		/* step 6's buffer of the driver before the reset */
	.set RAM_END, 16 << 20		/* the suite's memBytes */

	.set HDR_LEN, 12		/* struct virtio_net_hdr (VERSION_1) */
	.set FRAME_LEN, 60
	.set RXBUF_LEN, HDR_LEN + 1518	/* header + net.MaxFrame */

	.set POLLS, 1000000		/* bound on the polls for an echo */
	.set AFTER_POLLS, 1000		/* polls after the last echo: nothing else lands */

	/* fail_unless cc, msg: go to fail with msg unless condition cc holds
	 * (lea leaves the flags alone; R14 is fail's only). */
	.macro fail_unless cc, msg
	lea \msg(%rip), %r14
	j\cc 9f
	jmp fail
9:
	.endm

	.macro fail_with msg
	lea \msg(%rip), %r14
	jmp fail
	.endm

	/* tx_bad addr, len, flags, next: a chain of the header (descriptor 0)
	 * and descriptor 1 {addr, len, flags, next}, sent on a fresh device,
	 * must break it. */
	.macro tx_bad addr, len, flags, next
	call dev_init
	movabs $\addr, %rax
	mov $\len, %ecx
	mov $\flags | \next << 16, %edx
	call tx_two
	call expect_broken
	.endm

	/* rx_bad addr: a receive buffer at addr, posted on a fresh device,
	 * then a frame sent: its echo must break the device. */
	.macro rx_bad addr
	call dev_init
	mov $RXQ, %r9d
	xor %edi, %edi
	movabs $\addr, %rax
	mov $RXBUF_LEN, %ecx
	mov $F_WRITE, %edx
	call set_desc
	call add_chain
	movl $RX, R_QNOTIFY(%rbx)
	call send_echo
	mov $RXQ, %r9d
	call wait_broken
	.endm

	/* table_bad queue, addr: that queue's descriptor table at addr is refused. */
	.macro table_bad queue, addr
	mov $\queue, %ecx
	movabs $\addr, %rax
	call bad_table
	.endm

	.globl _start
_start:
	call _idt_init
	mov $0xffff, %ax		/* every PIC line masked: the guest polls */
	call _pic_init
	mov $VIO, %rbx
	xor %r12d, %r12d		/* seq of the last 'E' frame sent */

	/* identity and config space, once */
	mov $1, %r15d
	mov R_MAGIC(%rbx), %eax
	cmp $0x74726976, %eax
	fail_unless e, m_magic
	mov R_VERSION(%rbx), %eax
	cmp $2, %eax
	fail_unless e, m_magic
	mov R_DEVICE_ID(%rbx), %eax
	cmp $1, %eax
	fail_unless e, m_magic
	call check_config

/* 1: transmit buffers outside guest RAM, and a chain too long */
	tx_bad 0x7ffff0000000, FRAME_LEN, 0, 0
	tx_bad 0xffffffffffffffe0, FRAME_LEN, 0, 0
	tx_bad RAM_END-16, FRAME_LEN, 0, 0
	tx_bad 0x400000, 0x110000, 0, 0	/* > MaxChainBytes, all of it RAM */
	call step_ok

/* 2: transmit chains that loop */
	mov $2, %r15d
	tx_bad TXBUF+HDR_LEN, FRAME_LEN, F_NEXT, 0
	call dev_init
	mov $TXQ, %r9d
	xor %edi, %edi
	mov $TXBUF, %eax
	mov $HDR_LEN + FRAME_LEN, %ecx
	mov $F_NEXT, %edx		/* next = 0: itself */
	call set_desc
	call add_chain
	movl $TX, R_QNOTIFY(%rbx)
	call expect_broken
	call step_ok

/* 3: avail idx far ahead, on both queues */
	mov $3, %r15d
	call dev_init
	mov $'X', %al
	call build_frame
	mov $TXQ, %r9d
	xor %edi, %edi
	mov $TXBUF, %eax
	mov $HDR_LEN + FRAME_LEN, %ecx
	xor %edx, %edx
	call set_desc
	movw $1000, TXQ+A+2
	movl $TX, R_QNOTIFY(%rbx)
	call expect_broken
	call dev_init
	movw $1000, RXQ+A+2
	movl $RX, R_QNOTIFY(%rbx)	/* no frame yet: the device reads nothing */
	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	call send_echo
	mov $RXQ, %r9d
	call wait_broken
	call step_ok

/* 4: receive buffers outside guest RAM */
	mov $4, %r15d
	rx_bad 0x7ffff0000000
	rx_bad 0xfffffffffffffc00
	rx_bad RAM_END-0x400
	call step_ok

/* 5: descriptor tables outside guest RAM */
	mov $5, %r15d
	table_bad RX, 0xfffffffff000
	table_bad TX, 0xfffffffff000
	table_bad RX, 0xffffffffffffff00
	table_bad TX, 0xffffffffffffff00
	call step_ok

/* 6: reset with a receive buffer posted and a frame in flight, whose
 * echo the peer sends at once ('E'), then 50 ms late ('L') */
	mov $6, %r15d
	mov $'E', %ebp
	call reset_in_flight
	mov $'L', %ebp
	call reset_in_flight
	call step_ok

/* 7: garbage in every register and config offset */
	mov $7, %r15d
	call dev_init
	call garbage
	mov R_MAGIC(%rbx), %eax
	cmp $0x74726976, %eax
	fail_unless e, m_magic
	mov R_DEVICE_ID(%rbx), %eax
	cmp $1, %eax
	fail_unless e, m_magic
	call check_config
	call step_ok

/* 8: chains the device gives back without breaking */
	mov $8, %r15d
	call dev_init
	mov $'D', %al			/* kind 'D': must never reach the wire */
	call build_frame
	mov $8, %ecx			/* shorter than the header */
	xor %edx, %edx
	call send_tx
	mov $HDR_LEN, %ecx		/* the header alone */
	call send_tx
	mov $HDR_LEN + 13, %ecx		/* a frame below MinFrame */
	call send_tx
	mov $HDR_LEN + 1519, %ecx	/* a frame above MaxFrame */
	call send_tx
	movb $1, TXBUF			/* NEEDS_CSUM: not negotiated */
	mov $HDR_LEN + FRAME_LEN, %ecx
	call send_tx
	movb $0, TXBUF
	movb $1, TXBUF+1		/* GSO_TCPV4: not negotiated */
	mov $HDR_LEN + FRAME_LEN, %ecx
	call send_tx
	movb $0, TXBUF+1
	mov $HDR_LEN + FRAME_LEN, %ecx	/* a device-writable buffer */
	mov $F_WRITE, %edx
	call send_tx
	/* receive buffers: 20 bytes, then a driver-readable one, then a good one */
	mov $RXBUF, %edi
	mov $0x1000, %ecx
	mov $0xaa, %al
	rep stosb
	mov $RXQ, %r9d
	xor %edi, %edi
	mov $RXBUF, %eax
	mov $20, %ecx
	mov $F_WRITE, %edx
	call set_desc
	call add_chain
	mov $1, %edi
	mov $RXBUF + 0x800, %eax
	mov $RXBUF_LEN, %ecx
	xor %edx, %edx
	call set_desc
	call add_chain
	call post_rx			/* head 2 */
	movl $RX, R_QNOTIFY(%rbx)
	call send_echo
	call send_echo
	call send_echo
	call wait_rx
	xor %ecx, %ecx			/* used entries 0 and 1: heads 0 and 1, nothing written */
20:	mov RXQ+U+4(,%rcx,8), %eax
	cmp %ecx, %eax
	fail_unless e, m_used_id
	mov RXQ+U+8(,%rcx,8), %eax
	test %eax, %eax
	fail_unless z, m_bad_rx_len
	inc %ecx
	cmp $2, %ecx
	jne 20b
	xor %ecx, %ecx
21:	cmpb $0xaa, RXBUF(%rcx)
	fail_unless e, m_bad_rx_written
	inc %ecx
	cmp $0x1000, %ecx
	jne 21b
	mov $2, %edx
	mov %r12d, %esi
	call check_rx
	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	call step_ok

	/* the last round trip (step_ok's) is the last thing to land */
	mov $AFTER_POLLS, %ecx
22:	mov R_ISR(%rbx), %eax
	dec %ecx
	jnz 22b
	movzwl RXQ+U+2, %eax
	cmp $1, %eax
	fail_unless e, m_extra_used
	movzwl TXQ+U+2, %eax
	cmp $1, %eax
	fail_unless e, m_extra_used

	puts m_all
	mov %r12, %rax
	putdec_rax
	puts m_all2
	exit 0
	cli
	hlt

/* fail: R14 -> why; prints the step's failure and exits with its number. */
fail:
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

/* step_ok: the device recovers (reset, init, a round trip), then the
 * step's line. */
step_ok:
	call dev_init
	call roundtrip
	puts m_step
	mov %r15, %rax
	putdec_rax
	puts m_ok
	ret

/* check_config: MAC 02:00:00:00:00:01, status LINK_UP, max_virtqueue_pairs
 * 0, MTU 1500, read a byte at a time, and zeros after them. */
check_config:
	xor %ecx, %ecx
1:	mov 0x100(%rbx,%rcx), %al
	lea config(%rip), %rdx
	cmp (%rdx,%rcx), %al
	fail_unless e, m_config
	inc %ecx
	cmp $16, %ecx
	jne 1b
	ret

/* reset_in_flight: a receive buffer posted, a frame of kind BPL sent and
 * the device reset at once; then the init again, two buffers, an 'E'
 * frame: the echo of the first goes to the old buffer (if it came before
 * the reset), to the new driver, or nowhere; the second's lands. Prints
 * which. */
reset_in_flight:
	call dev_init
	mov $OLDRX, %edi
	mov $RXBUF_LEN, %ecx
	mov $0xaa, %al
	rep stosb
	mov $RXQ, %r9d
	xor %edi, %edi
	mov $OLDRX, %eax
	mov $RXBUF_LEN, %ecx
	mov $F_WRITE, %edx
	call set_desc
	call add_chain
	movl $RX, R_QNOTIFY(%rbx)
	mov %bpl, %al
	call send_kind
	movl $0, R_STATUS(%rbx)		/* the reset */
	movzwl RXQ+U+2, %r13d		/* 1 if the echo came before it */
	cmp $1, %r13d
	fail_unless be, m_extra_used
	push %r12			/* the first frame's seq */
	call dev_init
	call post_rx
	call post_rx
	movl $RX, R_QNOTIFY(%rbx)
	call send_echo
	/* wait until the last used entry holds the second frame's echo */
	mov $POLLS, %ecx
1:	movzwl RXQ+U+2, %eax
	test %eax, %eax
	jz 2f
	dec %eax
	and $QSIZE-1, %eax
	mov RXQ+U+4(,%rax,8), %edx
	and $QSIZE-1, %edx
	shl $11, %edx
	cmp %r12b, RXBUF+HDR_LEN+15(%rdx)
	je 3f
2:	mov R_ISR(%rbx), %eax
	dec %ecx
	jnz 1b
	fail_with m_timeout
3:	movzwl RXQ+U+2, %eax
	cmp $1, %eax
	je 4f
	cmp $2, %eax			/* the first echo went to the new driver */
	fail_unless e, m_extra_used
	test %r13d, %r13d
	fail_unless z, m_extra_used	/* ... and to the old one: twice */
	xor %edx, %edx
	mov (%rsp), %esi
	call check_rx
	mov $1, %edx
	mov %r12d, %esi
	call check_rx
	lea m_new(%rip), %rsi
	jmp 6f
4:	xor %edx, %edx			/* only the second echo */
	mov %r12d, %esi
	call check_rx
	test %r13d, %r13d
	jz 5f
	mov $OLDRX, %edi
	mov (%rsp), %esi
	call check_echo
	lea m_old(%rip), %rsi
	jmp 6f
5:	lea m_dropped(%rip), %rsi
6:	push %rsi
	puts m_s6
	mov %bpl, %al
	call _putc
	pop %rsi
	call _puts
	pop %rsi
	test %r13d, %r13d		/* the old buffer kept its fill unless written before the reset */
	jnz 8f
	xor %ecx, %ecx
7:	cmpb $0xaa, OLDRX(%rcx)
	fail_unless e, m_old_written
	inc %ecx
	cmp $RXBUF_LEN, %ecx
	jne 7b
8:	ret

/* dev_setup: reset, negotiate VERSION_1 alone, zero the rings, configure
 * both queues (size 16, rings in RXQ and TXQ) without making them ready. */
dev_setup:
	call negotiate
	mov $RXQ, %edi
	mov $(RINGS_END - RXQ) / 8, %ecx
	xor %eax, %eax
	rep stosq
	xor %ecx, %ecx
	mov $RXQ, %edx
1:	mov %ecx, R_QSEL(%rbx)
	mov R_QNUM_MAX(%rbx), %eax
	cmp $QSIZE, %eax
	fail_unless ae, m_qmax
	mov R_QREADY(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_reset
	movl $QSIZE, R_QNUM(%rbx)
	mov %edx, R_QDESC_LO(%rbx)
	movl $0, R_QDESC_HI(%rbx)
	lea A(%rdx), %eax
	mov %eax, R_QDRV_LO(%rbx)
	movl $0, R_QDRV_HI(%rbx)
	lea U(%rdx), %eax
	mov %eax, R_QDEV_LO(%rbx)
	movl $0, R_QDEV_HI(%rbx)
	add $TXQ - RXQ, %edx
	inc %ecx
	cmp $2, %ecx
	jne 1b
	ret

/* dev_init: dev_setup, then QueueReady on both and DRIVER_OK, checked. */
dev_init:
	call dev_setup
	xor %ecx, %ecx
1:	mov %ecx, R_QSEL(%rbx)
	movl $1, R_QREADY(%rbx)
	mov R_QREADY(%rbx), %eax
	cmp $1, %eax
	fail_unless e, m_qready
	inc %ecx
	cmp $2, %ecx
	jne 1b
	movl $S_LIVE, R_STATUS(%rbx)
	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	ret

/* bad_table: ECX = queue, RAX = descriptor table address: on a fresh
 * setup, QueueReady=1 must be refused and break the device; DRIVER_OK
 * and notifies change nothing. */
bad_table:
	push %rcx
	push %rax
	call dev_setup
	pop %rax
	pop %rcx
	mov %ecx, R_QSEL(%rbx)
	mov %eax, R_QDESC_LO(%rbx)
	shr $32, %rax
	mov %eax, R_QDESC_HI(%rbx)
	movl $1, R_QREADY(%rbx)
	mov R_QREADY(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_ring_taken
	movl $S_LIVE, R_STATUS(%rbx)
	mov $TXQ, %r9d
	call expect_broken
	mov $RXQ, %r9d
	call expect_broken
	mov R_QREADY(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_ring_taken
	ret

/* set_desc: descriptor EDI of the queue at R9 := {RAX, ECX, EDX = flags
 * | next << 16}. */
set_desc:
	push %rdi
	shl $4, %edi
	mov %rax, (%r9,%rdi)
	mov %ecx, 8(%r9,%rdi)
	mov %edx, 12(%r9,%rdi)
	pop %rdi
	ret

/* next_head: EDI = the queue at R9's next avail slot, used as the head of
 * a one-descriptor chain. */
next_head:
	movzwl A+2(%r9), %edi
	and $QSIZE-1, %edi
	ret

/* add_chain: head EDI into the next avail slot of the queue at R9, avail
 * idx bumped; no notify. */
add_chain:
	movzwl A+2(%r9), %eax
	mov %eax, %ecx
	and $QSIZE-1, %ecx
	mov %di, A+4(%r9,%rcx,2)
	inc %eax
	mov %ax, A+2(%r9)
	ret

/* tx_two: transmit chain head 0 = the header at TXBUF, then descriptor 1
 * {RAX, ECX, EDX = flags | next << 16}; published and notified. */
tx_two:
	push %rax
	push %rcx
	push %rdx
	mov $'X', %al			/* kind 'X': must never reach the wire */
	call build_frame
	mov $TXQ, %r9d
	xor %edi, %edi
	mov $TXBUF, %eax
	mov $HDR_LEN, %ecx
	mov $F_NEXT | 1 << 16, %edx
	call set_desc
	pop %rdx
	pop %rcx
	pop %rax
	mov $1, %edi
	call set_desc
	xor %edi, %edi
	call add_chain
	movl $TX, R_QNOTIFY(%rbx)
	ret

/* build_frame: TXBUF := a zero virtio_net_hdr and a FRAME_LEN-byte frame
 * from 02:00:00:00:00:01 to 02:00:00:00:00:02, ethertype 0x88b5, kind AL,
 * seq R12's low byte, then bytes i = seq ^ i. */
build_frame:
	mov %al, %dl
	mov $TXBUF, %edi
	xor %eax, %eax
	mov $HDR_LEN, %ecx
	rep stosb
	lea eth_hdr(%rip), %rsi
	mov $14, %ecx
	rep movsb
	mov %dl, TXBUF+HDR_LEN+14
	mov %r12b, TXBUF+HDR_LEN+15
	mov $16, %ecx
1:	mov %ecx, %eax
	xor %r12d, %eax
	mov %al, TXBUF+HDR_LEN(%rcx)
	inc %ecx
	cmp $FRAME_LEN, %ecx
	jne 1b
	ret

/* send_echo: frame R12+1 (R12 bumped) of kind 'E', sent; the peer sends
 * it back as kind 'R'. send_kind: the same of kind AL ('L': the peer
 * sends it back 50 ms late). */
send_echo:
	mov $'E', %al
send_kind:
	inc %r12d
	call build_frame
	mov $HDR_LEN + FRAME_LEN, %ecx
	xor %edx, %edx
	/* fall through */

/* send_tx: TXBUF's first ECX bytes as a one-descriptor chain with flags
 * EDX, notified: the device must give the chain back at once with
 * nothing written and stay live (whether or not it sent the frame). */
send_tx:
	mov $TXQ, %r9d
	call next_head
	mov $TXBUF, %eax
	call set_desc
	call add_chain
	movl $TX, R_QNOTIFY(%rbx)
	movzwl TXQ+U+2, %eax
	movzwl TXQ+A+2, %ecx
	cmp %ecx, %eax
	fail_unless e, m_tx_not_back
	dec %eax
	and $QSIZE-1, %eax
	mov TXQ+U+4(,%rax,8), %ecx
	cmp %edi, %ecx
	fail_unless e, m_used_id
	mov TXQ+U+8(,%rax,8), %ecx
	test %ecx, %ecx
	fail_unless z, m_tx_len
	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	ret

/* post_rx: a receive buffer of RXBUF_LEN bytes filled with 0xaa, at
 * RXBUF + head * 0x800, made available (no notify). */
post_rx:
	mov $RXQ, %r9d
	call next_head
	mov %edi, %eax
	shl $11, %eax
	add $RXBUF, %eax
	push %rdi
	push %rax
	mov %eax, %edi
	mov $RXBUF_LEN, %ecx
	mov $0xaa, %al
	rep stosb
	pop %rax
	pop %rdi
	mov $RXBUF_LEN, %ecx
	mov $F_WRITE, %edx
	call set_desc
	jmp add_chain

/* wait_rx: poll (each poll an exit, where a receive can be delivered)
 * until the device has used every receive buffer made available. */
wait_rx:
	mov $POLLS, %ecx
1:	movzwl RXQ+U+2, %eax
	cmp RXQ+A+2, %ax
	je 2f
	mov R_ISR(%rbx), %eax
	dec %ecx
	jnz 1b
	fail_with m_timeout
2:	ret

/* roundtrip: a receive buffer posted, frame R12+1 sent: its echo lands in
 * the buffer. */
roundtrip:
	call post_rx
	movl $RX, R_QNOTIFY(%rbx)
	call send_echo
	call wait_rx
	movzwl RXQ+U+2, %edx
	dec %edx
	mov %r12d, %esi
	call check_rx
	mov R_ISR(%rbx), %eax
	test $1, %eax
	fail_unless nz, m_no_used_irq
	mov %eax, R_IACK(%rbx)
	mov R_ISR(%rbx), %eax
	test %eax, %eax
	fail_unless z, m_no_ack
	mov R_STATUS(%rbx), %eax
	cmp $S_LIVE, %eax
	fail_unless e, m_driver_ok
	ret

/* check_rx: receive used entry EDX (free-running) holds the echo of frame
 * ESI: HDR_LEN + FRAME_LEN written, into a buffer that has it. */
check_rx:
	and $QSIZE-1, %edx
	mov RXQ+U+4(,%rdx,8), %edi
	mov RXQ+U+8(,%rdx,8), %ecx
	cmp $HDR_LEN + FRAME_LEN, %ecx
	fail_unless e, m_rx_len
	cmp $QSIZE, %edi
	fail_unless b, m_used_id
	shl $11, %edi
	add $RXBUF, %edi
	/* fall through */

/* check_echo: the buffer at EDI holds the header the device writes (zero
 * but num_buffers = 1), then frame ESI as the peer sends it back (kind
 * 'R'), and not a byte more. */
check_echo:
	xor %ecx, %ecx
1:	cmpb $0, (%rdi,%rcx)
	fail_unless e, m_rx_hdr
	inc %ecx
	cmp $10, %ecx
	jne 1b
	cmpw $1, 10(%rdi)
	fail_unless e, m_rx_hdr
	lea eth_hdr(%rip), %rdx
	xor %ecx, %ecx
2:	mov (%rdx,%rcx), %al
	cmp %al, HDR_LEN(%rdi,%rcx)
	fail_unless e, m_rx_data
	inc %ecx
	cmp $14, %ecx
	jne 2b
	cmpb $'R', HDR_LEN+14(%rdi)
	fail_unless e, m_rx_data
	mov %esi, %eax
	cmp %al, HDR_LEN+15(%rdi)
	fail_unless e, m_rx_data
	mov $16, %ecx
3:	mov %ecx, %eax
	xor %esi, %eax
	cmp %al, HDR_LEN(%rdi,%rcx)
	fail_unless e, m_rx_data
	inc %ecx
	cmp $FRAME_LEN, %ecx
	jne 3b
	cmpb $0xaa, HDR_LEN+FRAME_LEN(%rdi)
	fail_unless e, m_rx_overrun
	ret

/* expect_broken: the device refused the ring: NEEDS_RESET with a config
 * change interrupt, a notify on either queue changes nothing, and the
 * used ring of the queue at R9 is untouched. */
expect_broken:
	mov R_STATUS(%rbx), %eax
	test $S_NEEDS_RESET, %eax
	fail_unless nz, m_not_broken
	mov R_ISR(%rbx), %eax
	test $2, %eax
	fail_unless nz, m_no_config_irq
	movl $RX, R_QNOTIFY(%rbx)
	movl $TX, R_QNOTIFY(%rbx)
	mov R_STATUS(%rbx), %eax
	test $S_NEEDS_RESET, %eax
	fail_unless nz, m_not_broken
	movzwl U+2(%r9), %eax
	test %eax, %eax
	fail_unless z, m_used_written
	ret

/* wait_broken: poll until the device enters NEEDS_RESET (a frame's
 * arrival makes it read the receive ring), then expect_broken. */
wait_broken:
	mov $POLLS, %ecx
1:	mov R_STATUS(%rbx), %eax
	test $S_NEEDS_RESET, %eax
	jnz expect_broken
	dec %ecx
	jnz 1b
	fail_with m_not_broken

#include "virtio_lib.inc"
#include "lib.inc"
eth_hdr:	.byte 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5
config:		.byte 2, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0xdc, 0x05, 0, 0, 0, 0
m_step:		.asciz "virtio_net_hostile: step "
m_ok:		.asciz " ok\n"
m_failed:	.asciz " FAILED "
m_nl:		.asciz "\n"
m_all:		.asciz "virtio_net_hostile: all ok, "
m_all2:		.asciz " frames echoed\n"
m_s6:		.asciz "virtio_net_hostile: step 6: echo "
m_old:		.asciz " across the reset went to the old buffer\n"
m_new:		.asciz " across the reset went to the new driver\n"
m_dropped:	.asciz " across the reset was dropped\n"
m_magic:	.asciz "no virtio-net (magic, version or device ID)"
m_config:	.asciz "config space is not MAC 02:00:00:00:00:01, link up, MTU 1500"
m_reset:	.asciz "status, interrupt status or QueueReady not 0 after a reset"
m_features:	.asciz "VERSION_1 not offered or FEATURES_OK refused"
m_qmax:		.asciz "QueueNumMax below 16"
m_qready:	.asciz "valid queue not ready"
m_driver_ok:	.asciz "status not ACK|DRIVER|FEATURES_OK|DRIVER_OK"
m_not_broken:	.asciz "malformed ring did not set NEEDS_RESET"
m_no_config_irq: .asciz "NEEDS_RESET without a config change interrupt"
m_used_written:	.asciz "used ring written for a refused chain"
m_ring_taken:	.asciz "queue with its descriptor table outside RAM made ready"
m_tx_not_back:	.asciz "transmit chain not given back at the notify"
m_tx_len:	.asciz "transmit chain given back with bytes written"
m_timeout:	.asciz "echo did not arrive"
m_used_id:	.asciz "used ring entry names another head"
m_rx_len:	.asciz "receive used length is not header + frame"
m_rx_hdr:	.asciz "received virtio_net_hdr is not zero with num_buffers 1"
m_rx_data:	.asciz "received frame is not the echo"
m_rx_overrun:	.asciz "device wrote past the received frame"
m_bad_rx_len:	.asciz "refused receive buffer given back with bytes written"
m_bad_rx_written: .asciz "refused receive buffer written"
m_old_written:	.asciz "the old driver's buffer was written after the reset"
m_extra_used:	.asciz "an unexpected used entry appeared"
m_no_used_irq:	.asciz "no used-buffer interrupt"
m_no_ack:	.asciz "interrupt status not cleared by InterruptACK"
