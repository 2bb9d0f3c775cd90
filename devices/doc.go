// Package devices holds ftkvm's deterministic device models: the 8259A PIC
// pair, the 8254 PIT (with port 0x61), the 16550 UART, the CMOS/RTC and the
// i8042 reset line.
//
// Every model is a plain state machine driven from the vCPU thread. Its only
// nondeterministic inputs are the Clock it is given and data the VMM hands it
// at an exit (console input), so a recorder that logs those inputs and a
// replayer that feeds them back reproduce every register value the guest
// reads.
package devices
