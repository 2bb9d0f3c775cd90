/* badmem: a store to a guest physical address with neither RAM nor a
 * device behind it. */
#include "common.inc"
	.globl _start
_start:
	movl $0xdeadbeef, 0x30000000
	exit 0
	hlt
