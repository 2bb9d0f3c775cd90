/* msr_tsc: reads time through MSRs: 1000 rdmsr of IA32_TSC (0x10) folded
 * into a checksum, one of the kvmclock MSR, one wrmsr of IA32_TSC. The VMM
 * traps these MSRs: where KVM hands the accesses to userspace, reads return
 * the logged TSC (never backwards) and the write raises #GP; where it does
 * not (kvm_pvm), every access raises #GP. Either way the run must replay
 * exactly. Prints the checksum and the #GP count; exits 0, 2 if time ran
 * backwards, 3 if kvmclock read nonzero, 4 if the write did not fault. */
#include "common.inc"
	.globl _start
_start:
	call _idt_init
	gate 13, gp
	mov $1000, %r12
	xor %r13, %r13
	xor %r14, %r14			/* previous TSC */
1:	mov $0x10, %ecx
	xor %eax, %eax
	xor %edx, %edx
	mov faults(%rip), %r15d
	rdmsr
	shl $32, %rdx
	or %rdx, %rax
	cmp faults(%rip), %r15d
	jne 2f				/* faulted: no value */
	cmp %r14, %rax
	jb backwards
	mov %rax, %r14
2:	xor %rax, %r13
	rol $5, %r13
	mov %r13, sum(%rip)
	dec %r12
	jnz 1b
	mov $0x4b564d01, %ecx
	xor %eax, %eax
	xor %edx, %edx
	rdmsr
	or %edx, %eax
	jnz kvmclock
	mov faults(%rip), %r15d
	mov $0x10, %ecx
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
	cmp faults(%rip), %r15d
	je nofault
	puts msg
	mov sum(%rip), %rax
	putdec_rax
	puts msg2
	mov faults(%rip), %eax
	putdec_rax
	puts nl
	exit 0
backwards:
	exit 2
kvmclock:
	exit 3
nofault:
	exit 4

gp:	/* #GP pushes an error code; skip the 2-byte rdmsr/wrmsr */
	incl faults(%rip)
	addq $2, 8(%rsp)
	add $8, %rsp
	iretq

#include "lib.inc"
msg:	.asciz "msr_tsc: sum="
msg2:	.asciz " faults="
nl:	.asciz "\n"
	.balign 8
sum:	.quad 0
faults:	.long 0
