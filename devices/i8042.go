package devices

import "fmt"

// i8042 status register bits.
const (
	kbcStatusOBF     = 0x01 // output buffer full
	kbcStatusSys     = 0x04 // system flag (command byte bit 2)
	kbcStatusCommand = 0x08 // last write was to the command port
	kbcStatusUnlock  = 0x10 // keyboard not inhibited
	kbcStatusAux     = 0x20 // output buffer holds auxiliary-device data

	kbcOutResetLine = 0x01 // output port bit 0: CPU reset (active low)
)

// I8042 is the keyboard controller as far as a headless VM needs it: the
// status, command and data ports, the command byte, the output port with
// the CPU reset line, and the reset pulse commands. No keyboard or mouse
// is attached and no IRQ1/IRQ12 is raised: data written for the keyboard
// or mouse is dropped, and with nothing queued the status register reports
// an empty output buffer (and an empty input buffer, always).
//
// Register window: offset 0 is the data port (0x60), offset 4 the
// status/command port (0x64); offsets 1-3 are not decoded (port 0x61 is
// PIT.Port61). A bus that does not allow that overlap can register
// DataPort at 0x60 and CommandPort at 0x64 instead.
//
// Commands: 0x20 (and 0x21-0x3f) read controller RAM (the command byte;
// other bytes read 0), 0x60-0x7f write it, 0xa7/0xa8 disable/enable the
// mouse port, 0xaa self test (returns 0x55, sets the system flag), 0xab
// keyboard interface test (returns 0x00), 0xad/0xae disable/enable the
// keyboard, 0xc0 read input port, 0xd0 read output port, 0xd1 write output
// port, 0xd2/0xd3 write keyboard/mouse output buffer, 0xd4 write to mouse
// (dropped), 0xdd/0xdf A20 off/on (recorded only), 0xf0-0xff pulse output
// lines: any of them with bit 0 clear (0xfe is the usual one) pulses reset.
//
// Reset is asserted by command 0xfe (Linux's reboot=k) and its relatives,
// and by writing an output-port value with bit 0 clear through 0xd1. The
// reset function is called synchronously from Write after the controller's
// own state has been updated; it should only note the request (the VMM
// resets or stops the VM after the exit completes).
type I8042 struct {
	reset func()
	st    I8042State
}

// I8042State is the saved state of the keyboard controller.
type I8042State struct {
	CommandByte    uint8
	OutputPort     uint8
	Output         uint8 // output buffer
	OutputFull     bool
	OutputAux      bool  // the output buffer byte comes from the mouse port
	PendingCommand uint8 // command waiting for its data byte, or 0
	LastWasCommand bool
}

// NewI8042 returns a controller after its power-on self test: command byte
// 0x45 (keyboard interrupt enabled, system flag, translation), output port
// 0x03 (reset line inactive, A20 on), output buffer empty.
func NewI8042(reset func()) *I8042 {
	return &I8042{reset: reset, st: I8042State{CommandByte: 0x45, OutputPort: 0x03}}
}

// Read implements Device (offset 0 data, offset 4 status).
func (k *I8042) Read(offset uint64, data []byte) { readBytes(offset, data, k.readReg) }

// Write implements Device (offset 0 data, offset 4 command).
func (k *I8042) Write(offset uint64, data []byte) { writeBytes(offset, data, k.writeReg) }

// DataPort returns the data port alone (port 0x60, offset 0).
func (k *I8042) DataPort() Device { return k.port(0) }

// CommandPort returns the status/command port alone (port 0x64, offset 0).
func (k *I8042) CommandPort() Device { return k.port(4) }

func (k *I8042) port(reg uint64) Device {
	return deviceFuncs{
		read: func(off uint64) byte {
			if off != 0 {
				return 0xff
			}
			return k.readReg(reg)
		},
		write: func(off uint64, v byte) {
			if off == 0 {
				k.writeReg(reg, v)
			}
		},
	}
}

func (k *I8042) readReg(off uint64) byte {
	s := &k.st
	switch off {
	case 0:
		s.OutputFull = false
		return s.Output
	case 4:
		v := byte(kbcStatusUnlock) | s.CommandByte&kbcStatusSys
		if s.OutputFull {
			v |= kbcStatusOBF
			if s.OutputAux {
				v |= kbcStatusAux
			}
		}
		if s.LastWasCommand {
			v |= kbcStatusCommand
		}
		return v
	}
	return 0xff
}

func (k *I8042) writeReg(off uint64, v byte) {
	switch off {
	case 0:
		k.st.LastWasCommand = false
		k.data(v)
	case 4:
		k.st.LastWasCommand = true
		k.command(v)
	}
}

func (k *I8042) respond(v byte, aux bool) {
	k.st.Output, k.st.OutputFull, k.st.OutputAux = v, true, aux
}

func (k *I8042) command(v byte) {
	s := &k.st
	s.PendingCommand = 0
	switch {
	case v == 0x20:
		k.respond(s.CommandByte, false)
	case v > 0x20 && v < 0x40:
		k.respond(0, false)
	case v >= 0x60 && v < 0x80, v >= 0xd1 && v <= 0xd4:
		s.PendingCommand = v
	case v == 0xa7:
		s.CommandByte |= 0x20
	case v == 0xa8:
		s.CommandByte &^= 0x20
	case v == 0xaa:
		s.CommandByte |= kbcStatusSys
		k.respond(0x55, false)
	case v == 0xab:
		k.respond(0x00, false)
	case v == 0xad:
		s.CommandByte |= 0x10
	case v == 0xae:
		s.CommandByte &^= 0x10
	case v == 0xc0:
		k.respond(0x80, false) // keyboard not inhibited
	case v == 0xd0:
		k.respond(s.OutputPort, false)
	case v == 0xdd:
		s.OutputPort &^= 0x02
	case v == 0xdf:
		s.OutputPort |= 0x02
	case v >= 0xf0 && v&kbcOutResetLine == 0:
		k.pulseReset()
	}
}

func (k *I8042) data(v byte) {
	s := &k.st
	cmd := s.PendingCommand
	s.PendingCommand = 0
	switch {
	case cmd == 0x60:
		s.CommandByte = v
	case cmd > 0x60 && cmd < 0x80:
		// other controller RAM bytes are not kept
	case cmd == 0xd1:
		s.OutputPort = v | kbcOutResetLine
		if v&kbcOutResetLine == 0 {
			k.pulseReset()
		}
	case cmd == 0xd2:
		k.respond(v, false)
	case cmd == 0xd3:
		k.respond(v, true)
	}
	// cmd 0xd4 and plain keyboard data: no device attached.
}

func (k *I8042) pulseReset() {
	if k.reset != nil {
		k.reset()
	}
}

// Save returns a copy of the controller's state.
func (k *I8042) Save() I8042State { return k.st }

// Restore replaces the controller's state with s after checking it; on
// error the controller is unchanged.
func (k *I8042) Restore(s I8042State) error {
	c := s.PendingCommand
	if c != 0 && !(c >= 0x60 && c < 0x80) && !(c >= 0xd1 && c <= 0xd4) {
		return fmt.Errorf("devices: i8042: pending command %#x takes no data byte", c)
	}
	if s.OutputPort&kbcOutResetLine == 0 {
		return fmt.Errorf("devices: i8042: output port %#x holds the CPU in reset", s.OutputPort)
	}
	k.st = s
	return nil
}
