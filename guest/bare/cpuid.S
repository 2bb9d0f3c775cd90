/* cpuid: prints what CPUID returns for the leaves the VMM filters, one
 * line per leaf: "leaf.subleaf eax ebx ecx edx" in hex, then exits 0. */
#include "common.inc"
	.globl _start
_start:
	lea leaves(%rip), %r12
1:	mov (%r12), %eax
	cmp $0xffffffff, %eax
	je 3f
	mov 4(%r12), %ecx
	push %rax
	push %rcx
	call _puthex32
	mov $'.', %al
	call _putc
	pop %rax
	push %rax
	call _puthex32
	pop %rcx
	pop %rax
	cpuid
	mov %edx, %r13d
	mov %ecx, %r14d
	mov %ebx, %r15d
	call space_hex
	mov %r15d, %eax
	call space_hex
	mov %r14d, %eax
	call space_hex
	mov %r13d, %eax
	call space_hex
	mov $'\n', %al
	call _putc
	add $8, %r12
	jmp 1b
3:	exit 0
	hlt
space_hex:
	push %rax
	mov $' ', %al
	call _putc
	pop %rax
	jmp _puthex32
#include "lib.inc"
	.balign 4
leaves:	.long 0, 0, 1, 0, 7, 0, 0xd, 0, 0x40000000, 0, 0x40000001, 0
	.long 0x80000000, 0, 0x80000001, 0, 0x80000007, 0, 0x80000008, 0
	.long 0xffffffff
