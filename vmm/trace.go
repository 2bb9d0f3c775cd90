package vmm

import "fmt"

// LastExit describes the most recent synchronous exit (for diagnostics).
func (v *VM) LastExit() string {
	e := v.lastExit
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
		fmt.Fprintf(v.cfg.ExitTrace, "%v %s: %v\n", v.point, what, err)
		return
	}
	mem := ""
	if v.cfg.TraceMemory && v.point.Exits >= v.cfg.TraceMemoryFrom {
		crc, err := v.memoryCRC()
		if err != nil {
			mem = " mem=" + err.Error()
		} else {
			mem = fmt.Sprintf(" mem=%08x", crc)
		}
	}
	fmt.Fprintf(v.cfg.ExitTrace, "%v %s rip=%#x rflags=%#x gprs=%x%s\n", v.point, what, r.RIP, r.RFLAGS, GPRs(r), mem)
}
