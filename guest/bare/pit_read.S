/* pit_read: latches and reads PIT channel 0 2000 times (each read asks
 * the device clock), folding the counts into a checksum it prints. */
#include "common.inc"
	.globl _start
_start:
	mov $0x34, %al
	out %al, $0x43			/* channel 0, mode 2, full count */
	xor %al, %al
	out %al, $0x40
	out %al, $0x40
	mov $2000, %r12
	xor %r13, %r13
1:	xor %al, %al
	out %al, $0x43			/* latch channel 0 */
	in $0x40, %al
	movzbl %al, %ebx
	in $0x40, %al
	movzbl %al, %eax
	shl $8, %eax
	or %ebx, %eax
	add %rax, %r13
	rol $5, %r13
	dec %r12
	jnz 1b
	puts msg
	mov %r13, %rax
	putdec_rax
	puts nl
	exit 0
	hlt
#include "lib.inc"
msg:	.asciz "pit_read: sum="
nl:	.asciz "\n"
