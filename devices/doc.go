// Package devices holds ftkvm's deterministic device models: the 8259A PIC
// pair (PIC), the 8254 PIT with port 0x61 (PIT), the 16550A UART (UART),
// the CMOS/RTC (CMOS) and the i8042 keyboard controller's reset line
// (I8042).
//
// Every model is a plain state machine driven from the vCPU thread: no
// goroutines, no timers, no wall clock. Its only nondeterministic inputs
// are the Clock it is given and data the VMM hands it at an exit (console
// input via UART.Input), so a recorder that logs those inputs and a
// replayer that feeds them back reproduce every register value the guest
// reads. Each model documents exactly when it calls Clock.Now(); the PIC,
// UART and i8042 never do.
//
// Guest accesses may have any width: the port devices split them into
// byte accesses at consecutive offsets, like the ISA bus, and unknown
// registers read 0xff and ignore writes. Nothing panics or grows without
// bound on guest input.
//
// Each device has Save, returning a struct of exported plain fields (for
// msgpack snapshots), and Restore, which validates its argument and leaves
// the device unchanged on error. Snapshots are relative to the VM's Clock
// timeline (and, for the CMOS, its epoch).
//
// # Usage
//
// Create the devices on one Clock whose Now() counts nanoseconds from VM
// creation (monotonic; recorded on the primary, replayed on the backup),
// with the PIC as every device's IRQLine:
//
//	pic := devices.NewPIC()
//	pit := devices.NewPIT(clock, pic)
//	com1 := devices.NewUART(pic, 4, consoleWriter) // COM2: 0x2f8, IRQ 3
//	rtc := devices.NewCMOS(clock, epoch)           // epoch: VM configuration
//	kbc := devices.NewI8042(requestReset)
//
// and register their windows on the port I/O bus:
//
//	0x20-0x21    pic.Master()
//	0xa0-0xa1    pic.Slave()
//	0x4d0-0x4d1  pic.ELCR()
//	0x40-0x43    pit.Device()
//	0x61         pit.Port61()
//	0x3f8-0x3ff  com1
//	0x70-0x71    rtc
//	0x60         kbc.DataPort()
//	0x64         kbc.CommandPort()   (or kbc itself at 0x60-0x64, offsets
//	                                  0 and 4, if 0x61 can still go to the PIT)
//
// The VMM's duties from then on:
//
//  1. Run every device call on the vCPU thread; devices are not safe for
//     concurrent use.
//  2. Guest port accesses go to the window's Read/Write with the offset
//     from the window's start and the access's bytes.
//  3. Keep a host timer armed for pit.NextDeadline() (re-query it after
//     every exit that touched the PIT, and after Update); when the
//     deadline has passed, call pit.Update() on the vCPU thread. It reads
//     the clock once and raises IRQ0 if channel 0 fired; missed periods
//     coalesce into one interrupt. On the backup, Update must run at the
//     same point in the guest's execution as on the primary: its clock
//     reading is one of the logged readings and it may raise IRQ0.
//  4. After every exit, if pic.Pending() and the vCPU can take an
//     interrupt (RFLAGS.IF set, no interrupt shadow; otherwise request an
//     interrupt window), call pic.Acknowledge() and inject the vector it
//     returns with KVM_INTERRUPT. Acknowledge is the INTA cycle: call it
//     exactly once per injection, at the injection point, never to peek.
//  5. Feed console input with com1.Input on the vCPU thread at a logged
//     point; keep the bytes it did not accept for later.
//  6. When the i8042 reset callback fires (command 0xfe, Linux reboot=k),
//     finish the current exit and then reset or stop the VM.
//
// For re-protection and snapshots, save every device with Save and restore
// with Restore into devices created with the same configuration (IRQ
// lines, epoch); restore the PIC too, since it holds the IRQ line levels
// the other devices last drove.
//
// # Guests
//
// Linux in PIC mode programs the PIC pair with vectors 0x30/0x38, uses the
// PIT as its clock event device (mode 2 periodic, mode 4 one-shot) and
// finds COM1 as a 16550A. The UART only interrupts with MCR OUT2 set, as
// on a PC. The CMOS runs in UTC.
package devices
