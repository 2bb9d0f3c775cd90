/* pushf: exits with status 1 if the RFLAGS value pushf stores has TF set
 * (single-stepping leaking into guest memory), 0 otherwise. */
#include "common.inc"
	.globl _start
_start:
	pushf
	pop %rax
	shr $8, %rax
	and $1, %al
	exit_al
	hlt
