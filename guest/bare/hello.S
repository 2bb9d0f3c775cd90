/* hello: polled UART output, a string I/O instruction (rep outsb), exit 42. */
#include "common.inc"
	.globl _start
_start:
	puts msg
	lea msg2(%rip), %rsi
	mov $msg2_len, %rcx
	mov $COM1, %dx
	rep outsb
	exit 42
	hlt
#include "lib.inc"
msg:	.asciz "hello from a bare guest\n"
msg2:	.ascii "string I/O works\n"
	.set msg2_len, . - msg2
