package vmm

import (
	"encoding/hex"
	"fmt"
)

// GuestError ends a run because of something the guest did (or something
// KVM could not do for it). It names the instruction pointer and, where
// they could be read, the instruction bytes there.
type GuestError struct {
	What  string // "emulation failure", "triple fault", "unmapped MMIO write", ...
	RIP   uint64
	Bytes []byte // instruction bytes at RIP, when readable
	More  string // details (address, suberror, ...)
}

func (e *GuestError) Error() string {
	s := fmt.Sprintf("guest %s at RIP %#x", e.What, e.RIP)
	if len(e.Bytes) > 0 {
		s += " (instruction bytes " + hexBytes(e.Bytes) + ")"
	}
	if e.More != "" {
		s += ": " + e.More
	}
	return s
}

func hexBytes(b []byte) string {
	out := make([]byte, 0, 3*len(b))
	for i, c := range b {
		if i > 0 {
			out = append(out, ' ')
		}
		out = hex.AppendEncode(out, []byte{c})
	}
	return string(out)
}
