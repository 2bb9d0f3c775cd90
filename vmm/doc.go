// Package vmm is ftkvm's minimal KVM virtual machine monitor: one VM with
// one vCPU, guest RAM in a single region from address 0, an explicit CPUID
// table, and every device in userspace — there is no in-kernel irqchip or
// PIT, so every interrupt the guest receives is injected here, at a point
// the VMM chooses and can log.
//
// # Usage
//
//	vm, err := vmm.New(vmm.Config{MemoryBytes: 128 << 20, Console: os.Stdout})
//	defer vm.Close()
//	err = vm.LoadLinux(vmm.LinuxSpec{Kernel: vmlinux, Initrd: initrd, Cmdline: "console=ttyS0"})
//	// or: err = vm.LoadBare(image)
//	res, err := vm.Run(ctx)
//
// The caller's duties:
//
//  1. Create the VM with a validated Config; attach extra devices to vm.PIO
//     or vm.MMIO (MMIO devices belong at or above MMIOBase) before Run.
//  2. Load exactly one guest: LoadLinux (uncompressed vmlinux, 64-bit boot
//     protocol) or LoadBare (flat image entered at BareLoadAddr in 64-bit
//     mode with identity-mapped page tables and interrupts off).
//  3. Call Run on a goroutine that may be locked to its OS thread for the
//     duration; cancel the context to stop the guest from elsewhere.
//  4. Treat a *GuestError as the guest's fault (it names RIP and the
//     instruction bytes) and any other error as the host's.
//  5. Close the VM.
//
// # Run loop
//
// Each turn of the loop delivers asynchronous events to the devices (the
// PIT's timer, console input) on the vCPU thread, injects the PIC's
// highest-priority interrupt if the vCPU can take one (otherwise requests
// an interrupt window), and enters KVM_RUN. A host timer armed for the
// PIT's next deadline, console input, and cancellation kick the vCPU out of
// the guest with immediate_exit plus a thread-directed signal. HLT with
// interrupts enabled waits for the next event; HLT with interrupts disabled
// ends the run as a power-off (Linux without ACPI powers off that way);
// a byte written to ExitPort ends it with that status.
//
// # This host's KVM
//
// The project's machines run kvm_pvm nested inside another hypervisor.
// Its instruction emulator cannot execute int3, clac/stac, popcnt or
// cmpxchg16b in guest kernel code; the VMM completes int3 and clac/stac
// itself and reports any other failure as a GuestError. PVM also shows the
// guest the host's CPUID leaf 1 and 7 feature bits whatever the table says,
// so LoadLinux appends clearcpuid= (LinuxClearCPUID) to make Linux ignore
// the features the table hides.
package vmm
