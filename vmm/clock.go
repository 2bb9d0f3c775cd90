package vmm

import "time"

// HostClock is the devices.Clock of a live VM: monotonic nanoseconds since
// the VM was created.
type HostClock struct{ start time.Time }

// NewHostClock starts a clock at zero now.
func NewHostClock() *HostClock { return &HostClock{start: time.Now()} }

// Now implements devices.Clock.
func (c *HostClock) Now() int64 { return int64(time.Since(c.start)) }
