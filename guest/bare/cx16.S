/* cx16: cmpxchg16b, which CPUID hides and the KVM emulator on the
 * project's machines cannot execute. */
#include "common.inc"
	.globl _start
_start:
	lea slot(%rip), %rdi
	xor %eax, %eax
	xor %edx, %edx
	xor %ebx, %ebx
	xor %ecx, %ecx
	.globl cx16_insn
cx16_insn:
	cmpxchg16b (%rdi)
	exit 0
	hlt
	.balign 16
slot:	.quad 0, 0
