// Package vmm is ftkvm's minimal KVM virtual machine monitor: one VM with
// one vCPU, guest RAM in a single region from address 0, an explicit CPUID
// table, and every device in userspace — there is no in-kernel irqchip or
// PIT, so every interrupt the guest receives is injected here, at a point
// the VMM chooses and can log.
//
// # Usage
//
//	vm, err := vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: 128 << 20}, Options: vmm.Options{Console: os.Stdout}})
//	defer vm.Close()
//	err = vm.LoadLinux(vmm.LinuxSpec{Kernel: vmlinux, Initrd: initrd, Cmdline: "console=ttyS0"})
//	// or: err = vm.LoadBare(image)
//	res, err := vm.Run(ctx)
//
// The caller's duties:
//
//  1. Create the VM with a validated Config; add devices (AddVirtio,
//     AddDMATest, or your own on vm.PIO and vm.MMIO, at or above
//     MMIOBase) before loading the guest: LoadLinux puts the virtio
//     devices' virtio_mmio.device= options on the command line.
//  2. Load exactly one guest: LoadLinux (uncompressed vmlinux, 64-bit boot
//     protocol) or LoadBare (flat image entered at BareLoadAddr in 64-bit
//     mode with identity-mapped page tables and interrupts off).
//  3. Call Run on a goroutine that may be locked to its OS thread for the
//     duration; cancel the context to stop the guest from elsewhere.
//  4. Treat a *GuestError as the guest's fault (it names RIP and the
//     instruction bytes) and any other error as the host's.
//  5. Close the VM.
//
// # What an embedder uses
//
// Running a guest takes New with a Config (Spec: memory, Epoch, TSCSites;
// Options: Console, ConsoleInput, Driver, diagnostics), LoadLinux or
// LoadBare, devices from AddVirtio (virtio-blk, virtio-net) before the
// load, Run, and Close; Result and *GuestError say how it ended, and
// Fingerprint hashes the end state. While it runs, any goroutine may call
// Kick (leave the guest soon) and Exits (progress); after it, Point and
// Regs say where it stopped. Record, replay and FT sit above: use package
// replay (RecordFile, ReplayFile, PrepareLinux, PrepareBare) and package
// ft (LinuxGuest, BareGuest, RunPrimary, RunBackup) rather than writing a
// Driver. The register and CPUID types (Regs, Sregs, CPUIDEntry) are vmm's
// own mirrors of the kernel's; no KVM binding's types appear in the API.
//
// The replay plumbing is not on *VM: it is the Machine the run loop hands
// its Driver (DeliverAsync, LoadPage, PageContents, CopyPages, DirtyPages,
// CaptureVCPUState, ApplyVCPUState, TimerDeadline, InterruptPending,
// Clock, Bounce, ReplayWrites: replay's landmarks and deliveries go
// through them, and internal test machines implement them). VM.Machine
// returns the same view for code that drives a VM outside a Driver's
// calls (ft's machine factory, tests). The rest of the exported surface
// is plumbing between the VMM and the packages that drive it: the Driver
// interface, WriteReplayer and PageCopier, CaptureDevices and
// RestoreDevices (package snapshot), and the VCPU port below
// (NewWithVCPU, Memory, Bus). An embedder does not call them.
//
// # The vCPU port
//
// The run loop reaches the processor only through the VCPU interface: the
// entry (KVM_RUN) and its decoded exit, kvm_run's immediate_exit,
// if_flag, ready_for_interrupt_injection and request_interrupt_window,
// KVM_INTERRUPT, the register and whole-state calls, KVM_TRANSLATE and the
// dirty log. New gives the VM the KVM vCPU (kvmVCPU, whose ioctls live in
// kvm_unsafe.go); NewWithVCPU(cfg, cpu, mem) builds the same VM, devices
// and loop on any other, without /dev/kvm. Package vmmtest has one: it
// plays a guest from a script of exits, or from a Guest function called
// at each entry that changes the registers and memory and picks the exit
// (a guest model), and it logs every call the loop makes, so that tests
// check the real Run's rules (inject only where the guest can take it and
// never at an exit that completes with an exception, input only at exits,
// Deliver before injecting, NextEntry before entering) rather than a copy
// of them. Run reads the host's time through Options.HostTime, so that
// tests can move it too (the stall watch).
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
// # Snapshots
//
// CaptureDevices saves the vCPU and every device of a VM stopped at a
// synchronous exit (it completes the exit's I/O first and quiesces the
// bounce engine); RestoreDevices loads them into a new VM with the same
// devices, whose clock continues the saved one (NewHostClockAt). Package
// snapshot puts them, with guest memory, in one file.
//
// # Which KVM
//
// Any standard KVM (VMX or SVM). The project's own machines have no
// /dev/kvm and run the VMM in an emulated AMD host (package testbed), where
// KVM offers no PMU and no usable breakpoints or invisible single steps;
// the VMM uses none of them (see package replay for how landmarks work
// without). LoadLinux appends clearcpuid= (LinuxClearCPUID) so that Linux
// ignores the features the CPUID table hides even on a host that leaks
// them (as the kvm_pvm machines the project started on did).
package vmm
