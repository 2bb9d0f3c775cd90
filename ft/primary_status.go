package ft

import (
	"fmt"
	"time"
)

// The primary's status: its periodic line and the Status it reports
// (Config.OnStatus, Config.Monitor).

func (p *primary) status(stop chan struct{}) {
	every(stop, p.cfg.StatusEvery, func() {
		s := p.report()
		mode := [...]string{"PROTECTED", "UNPROTECTED", "HALTED"}[p.protection()]
		if p.sender != nil && s.State == stProtected.String() {
			p.log.Info(fmt.Sprintf("%s: exit %d, log %d entries sent / %d acked by the backup, output %d bytes released / %d held",
				mode, s.Exits, s.LogEntries, s.LogEntries-s.LagEntries, s.Released, p.held()),
				"state", s.State, "lag_entries", s.LagEntries, "lag_age", s.LagAge, "log_bytes_per_second", s.LogBytesPerSecond,
				"commit_p50", s.CommitP50, "commit_p99", s.CommitP99)
		} else {
			p.log.Info(fmt.Sprintf("%s: exit %d, output %d bytes released", mode, s.Exits, s.Released), "state", s.State, "reason", s.Reason)
		}
	})
}

// report delivers the primary's status now (see reporter) and returns it.
func (p *primary) report() Status { return p.rep.report(p.snapshot) }

func (p *primary) snapshot() (Status, time.Time) {
	now := time.Now()
	p.qmu.Lock()
	state, why, released := p.pair.state, p.pair.why, p.commit.released
	p.qmu.Unlock()
	s := Status{State: state.String(), Protected: state == stProtected, Reason: why, Generation: p.gen,
		Exits: p.lastExits.Load(), LogBytes: p.logBytes.Load(), Released: released}
	switch state {
	case stJoining:
		s.Reason = "waiting for a backup to connect"
	case stClaiming:
		s.Reason = "the backup was lost: claiming the pair; output held"
	}
	if p.sender != nil {
		p.lag.took(p.sender.Acked(), now)
		p.lag.fill(&s, now)
		s.RTT = p.sender.RTT()
		if state != stProtected && state != stClaiming {
			// No backup any more: nothing is waiting for it.
			s.LagEntries, s.LagBytes, s.LagAge = 0, 0, 0
		}
	}
	s.CommitP50, s.CommitP99 = p.commit.recent.percentiles()
	return s, now
}
