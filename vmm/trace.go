package vmm

import (
	"fmt"
	"io"
)

// LastExit describes the most recent synchronous exit (for diagnostics).
func (v machine) LastExit() string { return describeExit(v.lastExit) }

// describeExit names an exit for LastExit and ExitTrace lines: its kind,
// and the port or address of an access.
func describeExit(e Exit) string {
	switch e.Kind {
	case ExitIOIn, ExitIOOut:
		return fmt.Sprintf("%v port %#x", e.Kind, e.Port)
	case ExitMMIORead, ExitMMIOWrite:
		return fmt.Sprintf("%v %#x", e.Kind, e.Addr)
	}
	return e.Kind.String()
}

// traceLine writes one ExitTrace line, if tracing.
func (v *VM) traceLine(what string) {
	if v.cfg.ExitTrace == nil {
		return
	}
	r, err := v.Regs()
	if err != nil {
		io.WriteString(v.cfg.ExitTrace, traceErrorText(v.point, what, err))
		return
	}
	mem := ""
	if v.cfg.TraceMemory && v.point.Exits >= v.cfg.TraceMemoryFrom {
		mem = traceMemField(v.memoryCRC())
	}
	io.WriteString(v.cfg.ExitTrace, traceText(v.point, what, r, mem))
}

// traceText is an ExitTrace line: the point, what happened, RIP, RFLAGS,
// the general registers (in GPRs order) and mem (traceMemField).
func traceText(p Point, what string, r Regs, mem string) string {
	return fmt.Sprintf("%v %s rip=%#x rflags=%#x gprs=%x%s\n", p, what, r.RIP, r.RFLAGS, GPRs(r), mem)
}

// traceErrorText is the ExitTrace line for a point whose registers could
// not be read.
func traceErrorText(p Point, what string, err error) string {
	return fmt.Sprintf("%v %s: %v\n", p, what, err)
}

// traceMemField is the memory CRC field of an ExitTrace line.
func traceMemField(crc uint32, err error) string {
	if err != nil {
		return " mem=" + err.Error()
	}
	return fmt.Sprintf(" mem=%08x", crc)
}
