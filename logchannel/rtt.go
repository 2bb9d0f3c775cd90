package logchannel

import "time"

// rttProbe measures the channel's round trip the way TCP's first RTT
// estimators did: one probe at a time, the newest entry a write sent,
// timed until an ack covers it, smoothed as srtt += (sample - srtt)/8.
// The time includes the receiver's own delay before it acks, which is
// what a sender waiting for acks sees. It reads no clock itself.
type rttProbe struct {
	seq   uint64
	at    time.Time
	armed bool
	srtt  time.Duration
}

// sent notes that a write carried entries up to seq at now; it arms the
// probe unless one is out.
func (p *rttProbe) sent(seq uint64, now time.Time) {
	if !p.armed && seq > 0 {
		p.seq, p.at, p.armed = seq, now, true
	}
}

// acked notes an ack of seq at now and reports whether it took a sample.
func (p *rttProbe) acked(seq uint64, now time.Time) bool {
	if !p.armed || seq < p.seq {
		return false
	}
	sample := max(now.Sub(p.at), 0)
	if p.srtt == 0 {
		p.srtt = sample
	} else {
		p.srtt += (sample - p.srtt) / 8
	}
	p.armed = false
	return true
}
