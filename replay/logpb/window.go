package logpb

// AtWindow reports whether d was delivered at an interrupt-window exit
// named by its count rather than by a state-transfer landmark: the
// first window exit after the synchronous exit (or landmark) before it.
// Such a delivery reuses the Landmark message with the registers at the
// window exit only (rip, rflags, gprs: the replay checks its own there)
// and no vcpu_state nor pages. A replayer that predates it refuses it
// as a landmark without vCPU state.
func (d *Deliver) AtWindow() bool {
	lm := d.GetLandmark()
	return lm != nil && len(lm.VcpuState) == 0 && len(lm.Pages) == 0 && len(lm.Gprs) > 0
}

// AtLandmark reports whether d carries a state-transfer landmark.
func (d *Deliver) AtLandmark() bool { return d.GetLandmark() != nil && !d.AtWindow() }
