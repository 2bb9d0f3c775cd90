// Package tscpatch finds the rdtsc and rdtscp instructions in a guest kernel
// image and patches each into a trapping "out imm8, al" on a reserved port,
// so that every time-stamp-counter read the guest makes becomes a VM exit
// whose value the VMM supplies (primary) or replays from the log (backup).
//
// Why: on ftkvm's hosts rdtsc runs inside KVM without any exit, so its value
// would be a nondeterministic input the log never sees, and the backup would
// diverge (design rule 5). Hiding the TSC from CPUID is not enough: Linux's
// random_get_entropy still executes rdtsc on x86-64.
//
// The patch is two bytes, the length of rdtsc (0f 31 → e6 PORT); rdtscp
// (0f 01 f9) becomes e6 PORT 90, the out plus a nop. Neither instruction
// changes flags or memory, so the only difference the guest can see is the
// value the VMM puts in the registers. The out needs CPL 0 (kernel code; a
// user-mode out faults without exiting), which is where the sites are.
//
// Sites are found with a real disassembler (golang.org/x/arch/x86/x86asm,
// 64-bit mode) from known instruction starts only: every function symbol of
// the vmlinux, every replacement snippet of the kernel's alternatives (named
// by .altinstructions), and a sweep of the executable bytes no function
// covers, whose finds are marked uncertain. A 0f 31 inside another
// instruction (an immediate, a displacement) is not a site; a tinyconfig
// Linux 6.1 has about twice as many such byte patterns as real sites.
//
// # Usage
//
//	vmlinux, _ := os.ReadFile("guest/out/vmlinux")
//	p, err := tscpatch.PrepareELF(vmlinux) // Scan, Patch, NewSiteTable
//	if err != nil { ... }
//	// load p.Image (not vmlinux) with vmm.LoadLinux, pass p.Table as
//	// vmm.Config.TSCSites; in the run loop (vmm does this):
//	//   on KVM_EXIT_IO to a port for which table.Reserved(port):
//	//     complete the exit; pa := translate(RIP-2)
//	//     site, err := table.Check(port, dir == out, size, pa)
//
// For a flat test guest (vmm.LoadBare), use PrepareFlat(image,
// vmm.BareLoadAddr). Scan, ScanFlat, Patch and NewSiteTable are the steps,
// for a VMM that wants other ports.
//
// # The VMM's duties
//
//  1. Patch before loading. Scan and Patch the image bytes, load the patched
//     copy, and build the SiteTable from the same sites and ports. Primary
//     and backup must load byte-identical patched images; compare a hash of
//     it at handshake like the rest of the VM configuration.
//  2. Treat every exit on a reserved port as a TSC read candidate, and check
//     it: complete the exit first (KVM advances RIP past an out only when the
//     next KVM_RUN completes it; use immediate_exit), then translate RIP-2 —
//     "out imm8, al" is always two bytes — to a guest physical address
//     (KVM_TRANSLATE) and call SiteTable.Check with the exit's port,
//     direction and size. The returned Site's Kind says what to emulate.
//  3. Emulate: set RAX = low 32 bits and RDX = high 32 bits of the virtual
//     TSC (upper halves zero, as rdtsc does); for RDTSCP also RCX = the
//     guest's IA32_TSC_AUX (zero-extended). The primary logs the value it
//     hands out, the backup takes it from the log; the virtual TSC must be
//     monotonic.
//  4. Never let a reserved-port access that Check rejects pass unnoticed:
//     a guest that writes to the port anywhere else (hostile, or a stale or
//     wrong site table) must not be handed a TSC value as if it were a
//     site. Report it (log and stop, or a verify-mode divergence) instead
//     of guessing.
//  5. Keep the two ports distinct (the defaults are). The kernel's
//     alternatives may copy an rdtscp replacement over an rdtsc site, so one
//     address can hold either kind; the port tells which one ran.
//
// Things about the Linux image to know:
//
//   - Alternatives: apply_alternatives copies .altinstr_replacement snippets
//     over the original instructions at boot. Patching the replacement in the
//     image is enough (the copy carries the out), but the out then executes
//     at the copy's address, not in .altinstr_replacement; Scan reads
//     .altinstructions to record that address as Site.AltPAddrs, and
//     SiteTable accepts it.
//   - .init.text sites execute only during boot; the kernel frees and
//     poisons init memory afterwards (free_initmem), after which an exit
//     claiming one of those addresses is suspicious.
//   - Only code in the vmlinux's executable sections is scanned. The vDSO
//     is embedded as data; its rdtsc runs only while the TSC is the
//     clocksource, which it is not with the TSC hidden from CPUID. User-space
//     rdtsc (e.g. in a static libc) is not patched.
package tscpatch
