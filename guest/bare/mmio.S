/* mmio: writes a value to a test device at MMIO_BASE and reads back
 * MMIO_BASE+8, which the test device answers with the value's complement.
 * Exits 0 when that holds, 1 otherwise. */
#include "common.inc"
	.globl _start
_start:
	mov $MMIO_BASE, %rbx
	movl $0x12345678, (%rbx)
	movl 8(%rbx), %eax
	cmp $0xedcba987, %eax
	jne 1f
	movq $0x1122334455667788, %rax
	movq %rax, 16(%rbx)
	exit 0
1:	exit 1
	hlt
