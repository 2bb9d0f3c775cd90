package logchannel

import (
	"testing"
	"time"
)

func TestRTTProbe(t *testing.T) {
	var p rttProbe
	t0 := time.Unix(0, 0)
	ms := time.Millisecond
	if p.acked(5, t0) {
		t.Fatal("a sample with no probe out")
	}
	p.sent(3, t0)
	p.sent(4, t0.Add(5*ms)) // a probe is out: not re-armed
	if p.acked(2, t0.Add(8*ms)) {
		t.Fatal("an ack short of the probe took a sample")
	}
	if !p.acked(3, t0.Add(10*ms)) || p.srtt != 10*ms {
		t.Fatalf("first sample: srtt %v, want 10ms", p.srtt)
	}
	p.sent(9, t0.Add(20*ms))
	if !p.acked(12, t0.Add(38*ms)) || p.srtt != 11*ms {
		t.Fatalf("second sample of 18ms: srtt %v, want 10 + 8/8 = 11ms", p.srtt)
	}
	p.sent(0, t0) // nothing sent: no probe
	if p.armed {
		t.Fatal("armed for entry 0")
	}
}

// Over a real channel the sender's estimate is positive once entries were
// acked.
func TestSenderRTT(t *testing.T) {
	a, b := NewPipe(1 << 16)
	s, r := mustConnect(t, a, b, testConfig(), testConfig())
	if s.RTT() != 0 {
		t.Fatalf("RTT before any ack: %v", s.RTT())
	}
	ctx := t.Context()
	for i := 0; i < 20; i++ {
		seq, err := s.Append(ctx, []byte("entry"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.Next(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.Consumed(seq); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitAcked(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	if rtt := s.RTT(); rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("RTT after 20 acked entries: %v", rtt)
	}
}
