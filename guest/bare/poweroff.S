/* poweroff: halts with interrupts disabled, like Linux's poweroff without ACPI. */
#include "common.inc"
	.globl _start
_start:
	puts msg
	cli
	hlt
#include "lib.inc"
msg:	.asciz "powering off\n"
