package logchannel

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func coreConfig() Config {
	c := testConfig().withDefaults()
	c.WindowBytes = 1000
	c.WindowEntries = 20
	c.BatchBytes = 100
	c.MaxEntryBytes = 200
	return c
}

// retained returns the sender's retained entries after acked, checking
// that the batches are contiguous, cover acked+1 and match their CRCs and
// the window accounting.
func retained(c *senderCore) (first uint64, entries [][]byte) {
	first = c.acked + 1
	var want uint64
	var n, bytes int
	for i, b := range c.batches {
		if i == 0 && (b.first > first || b.last() < c.acked+1) {
			panic("first batch does not hold acked+1: " + dump(c))
		}
		if i > 0 && b.first != want {
			panic("batches not contiguous")
		}
		d := b.data
		for i := 0; i < b.count; i++ {
			var e []byte
			e, d = nextEntry(d)
			if b.first+uint64(i) > c.acked {
				entries = append(entries, e)
			}
		}
		if len(d) != 0 || crc32c(b.data) != b.crc {
			panic("batch data or crc inconsistent")
		}
		want = b.last() + 1
		n += b.count
		bytes += len(b.data)
	}
	if n != c.unackedEntries || bytes > c.usedBytes {
		panic("window accounting differs from the batches")
	}
	return first, entries
}

func TestSenderCoreWindow(t *testing.T) {
	cfg := coreConfig()
	cfg.WindowBytes = 2000 // the entry window binds: 20 entries take three chunks and batches
	c := newSenderCore(&cfg)
	for i := 0; i < 20; i++ {
		if !c.fits(10) {
			t.Fatalf("entry %d does not fit", i)
		}
		if seq := c.append(entry(uint64(i+1), 10)); seq != uint64(i+1) {
			t.Fatalf("seq %d", seq)
		}
	}
	if c.fits(10) {
		t.Fatal("21st entry fits a 20-entry window")
	}
	bs := c.take(nil, 100, 1<<30)
	if c.sent != 20 || len(bs) != 3 { // 9 entries of 11 bytes per 100-byte batch
		t.Fatalf("sent %d in %d batches", c.sent, len(bs))
	}
	if _, err := c.ack(21); err == nil {
		t.Fatal("ack beyond sent accepted")
	}
	if adv, err := c.ack(9); !adv || err != nil {
		t.Fatalf("ack 9: %v %v", adv, err)
	}
	if !c.fits(10) || c.unackedEntries != 11 {
		t.Fatalf("after ack: entries %d", c.unackedEntries)
	}
	if _, err := c.ack(5); err == nil {
		t.Fatal("ack going back accepted")
	}
	// Partly acked batch keeps its bytes until fully acked.
	c.ack(10)
	if c.unackedEntries != 11 {
		t.Fatalf("partial ack freed window: %d", c.unackedEntries)
	}
	c.written(bs)
}

func TestSenderCoreByteWindow(t *testing.T) {
	cfg := coreConfig()
	cfg.WindowBytes = 2000
	c := newSenderCore(&cfg)
	for c.fits(150) {
		c.append(make([]byte, 150))
	}
	// Each entry is larger than a chunk, so it takes a chunk of its own
	// (152 bytes) with its overhead, and a batch with its own.
	if cost := 152 + 2*frameOverhead; c.usedBytes > cfg.WindowBytes || c.usedBytes+cost <= cfg.WindowBytes || c.usedBytes != c.unackedEntries*cost {
		t.Fatalf("%d entries use %d bytes, window %d", c.unackedEntries, c.usedBytes, cfg.WindowBytes)
	}
}

func TestSenderCoreResumeMidBatch(t *testing.T) {
	cfg := coreConfig()
	c := newSenderCore(&cfg)
	for i := 1; i <= 15; i++ {
		c.append(entry(uint64(i), 10))
	}
	c.written(c.take(nil, 100, 1<<30))
	c.ack(3)
	// The receiver had 1..5 (consumed 3); resume must send 6.. exactly.
	if err := c.resume(5, 3); err != nil {
		t.Fatal(err)
	}
	if c.acked != 3 || c.sent != 5 {
		t.Fatalf("acked %d sent %d", c.acked, c.sent)
	}
	b := c.oldestUnsent()
	if b == nil || b.first != 6 {
		t.Fatalf("first unsent batch %+v", b)
	}
	first, es := retained(&c)
	if first != 4 || len(es) != 12 {
		t.Fatalf("retained from %d: %d entries", first, len(es))
	}
	for i, e := range es {
		if err := checkEntry(first+uint64(i), e, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.resume(2, 2); err == nil {
		t.Fatal("resume before acked accepted")
	}
	if err := c.resume(16, 3); err == nil {
		t.Fatal("resume beyond appended accepted")
	}
}

// A random walk over append/take/ack/resume checked against a dumb model:
// the retained entries are always exactly acked+1..next-1, and what the
// writer takes continues from what the receiver has.
func TestSenderCoreRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 200; trial++ {
		cfg := coreConfig()
		c := newSenderCore(&cfg)
		var log [][]byte // model: every entry appended, index seq-1
		var received uint64
		for step := 0; step < 200; step++ {
			switch rng.IntN(5) {
			case 0, 1:
				n := rng.IntN(120)
				if c.fits(n) {
					e := make([]byte, n)
					for i := range e {
						e[i] = byte(rng.Uint32())
					}
					c.append(e)
					log = append(log, e)
				}
			case 2:
				bs := c.take(nil, 1+rng.IntN(3), 1<<30)
				for _, b := range bs {
					if b.first != received+1 {
						t.Fatalf("trial %d: took batch at %d, receiver has %d", trial, b.first, received)
					}
					d := b.data
					for i := 0; i < b.count; i++ {
						var e []byte
						e, d = nextEntry(d)
						if !bytes.Equal(e, log[b.first-1+uint64(i)]) {
							t.Fatalf("trial %d: entry %d differs", trial, b.first+uint64(i))
						}
					}
					received = b.last()
				}
				c.written(bs)
			case 3:
				if received > c.acked {
					if _, err := c.ack(c.acked + 1 + uint64(rng.IntN(int(received-c.acked)))); err != nil {
						t.Fatal(err)
					}
				}
			case 4: // reconnect: the receiver kept some of what was sent
				if received > c.acked {
					received = c.acked + uint64(rng.IntN(int(received-c.acked)+1))
				}
				if err := c.resume(received, c.acked); err != nil {
					t.Fatal(err)
				}
			}
			first, es := retained(&c)
			if first != c.acked+1 || len(es) != len(log)-int(c.acked) {
				t.Fatalf("trial %d step %d: retained %d from %d, acked %d, appended %d", trial, step, len(es), first, c.acked, len(log))
			}
			for i, e := range es {
				if !bytes.Equal(e, log[int(first)-1+i]) {
					t.Fatalf("trial %d: retained entry %d differs", trial, int(first)+i)
				}
			}
			if c.unackedEntries > cfg.WindowEntries { // bytes: TestSenderCoreMemoryRandom
				t.Fatalf("trial %d: window accounting %d entries", trial, c.unackedEntries)
			}
		}
	}
}

func TestReceiverCore(t *testing.T) {
	cfg := coreConfig()
	c := newReceiverCore(&cfg)
	accept := func(first uint64, entries ...[]byte) error {
		f := dataFrame(first, entries...)
		h, raw, _, err := decodeFrame(f, 1<<20, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return c.acceptData(&h, raw)
	}
	if err := accept(1, []byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, accept(4, []byte("d")), ErrSequence) // gap
	wantErr(t, accept(2, []byte("b")), ErrSequence) // overlap
	if err := accept(3, []byte("c")); err != nil {
		t.Fatal(err)
	}
	if ack, ok := c.ackDue(); !ok || ack != 3 {
		t.Fatalf("ack %d %v", ack, ok)
	}
	if _, ok := c.ackDue(); ok {
		t.Fatal("ack owed twice")
	}
	for i, want := range []string{"a", "b", "c"} {
		seq, e, ok := c.next()
		if !ok || seq != uint64(i+1) || string(e) != want {
			t.Fatalf("next: %d %q %v", seq, e, ok)
		}
	}
	if _, _, ok := c.next(); ok {
		t.Fatal("next on empty buffer")
	}
	if _, err := c.markConsumed(4); err == nil {
		t.Fatal("Consumed beyond delivered accepted")
	}
	wantErr(t, c.closeStream(2), ErrSequence)
	if err := c.closeStream(3); err != nil || !c.ended {
		t.Fatal(err)
	}
	wantErr(t, accept(4, []byte("d")), ErrProtocol)
}

func TestReceiverCoreAckConsumedAndRoom(t *testing.T) {
	cfg := coreConfig()
	cfg.AckMode = AckConsumed
	c := newReceiverCore(&cfg)
	h, raw := readInto(t, &c, dataFrame(1, make([]byte, 600)))
	if !c.hasRoom(&h, raw) {
		t.Fatal("empty buffer refuses a frame")
	}
	c.acceptData(&h, raw)
	h2, raw2 := readInto(t, &c, dataFrame(2, make([]byte, 600)))
	if c.hasRoom(&h2, raw2) {
		t.Fatal("buffer over the window takes another frame")
	}
	if _, ok := c.ackDue(); ok {
		t.Fatal("AckConsumed acks before Consumed")
	}
	c.next()
	if !c.hasRoom(&h2, raw2) {
		t.Fatal("no room after next")
	}
	c.acceptData(&h2, raw2)
	if moved, err := c.markConsumed(1); !moved || err != nil {
		t.Fatal(moved, err)
	}
	if ack, ok := c.ackDue(); !ok || ack != 1 {
		t.Fatalf("ack %d %v", ack, ok)
	}
}

func TestHandshakeMessages(t *testing.T) {
	h := hello{configHash: testHash, streamID: 9, firstRetained: 5, lastAppended: 10, maxFrame: 1 << 20, heartbeatUS: 1000}
	got, err := decodeHello(h.encode())
	if err != nil || got != h {
		t.Fatalf("hello round trip: %+v %v", got, err)
	}
	w := welcome{received: 7, acked: 6, heartbeatUS: 100}
	gw, err := decodeWelcome(w.encode())
	if err != nil || gw != w {
		t.Fatalf("welcome round trip: %+v %v", gw, err)
	}
	if _, err := decodeWelcome((&welcome{received: 1, acked: 2}).encode()); err == nil {
		t.Fatal("welcome acking beyond received accepted")
	}
	wantErr(t, decodeReject(encodeReject(rejectConfig, "x")), ErrConfigMismatch)
	wantErr(t, decodeReject(encodeReject(rejectVersion, "x")), ErrVersion)
	wantErr(t, decodeReject(encodeReject(rejectStream, "x")), ErrHandshake)
	wantErr(t, decodeReject(nil), ErrHandshake)

	st := receiverState{configHash: testHash, received: 7, maxFrame: 1 << 20, timeout: time.Second}
	for _, c := range []struct {
		edit func(*hello, *receiverState)
		want rejectCode
	}{
		{func(*hello, *receiverState) {}, 0},
		{func(h *hello, _ *receiverState) { h.configHash[0] ^= 1 }, rejectConfig},
		{func(_ *hello, s *receiverState) { s.streamID = 8 }, rejectStream},
		{func(h *hello, _ *receiverState) { h.lastAppended = 6 }, rejectStream},
		{func(h *hello, _ *receiverState) { h.firstRetained = 9 }, rejectStream},
		{func(h *hello, _ *receiverState) { h.maxFrame = 2 << 20 }, rejectLimits},
		{func(h *hello, _ *receiverState) { h.heartbeatUS = 600000 }, rejectLimits},
	} {
		hh, ss := h, st
		c.edit(&hh, &ss)
		if code, msg := judgeHello(&ss, &hh); code != c.want {
			t.Errorf("judgeHello: code %d (%s), want %d", code, msg, c.want)
		}
	}
	if err := checkWelcome(&welcome{received: 11}, 5, 10, time.Second); err == nil {
		t.Error("welcome beyond appended accepted")
	}
	if err := checkWelcome(&welcome{received: 4}, 5, 10, time.Second); err == nil {
		t.Error("welcome before acked accepted")
	}
}

func TestLivenessCheck(t *testing.T) {
	ms := int64(time.Millisecond)
	for _, c := range []struct {
		now, recv, send int64
		paused          bool
		hb, dead        bool
	}{
		{now: 50 * ms, recv: 0, send: 0, hb: false, dead: false},
		{now: 100 * ms, recv: 0, send: 0, hb: true, dead: false},
		{now: 1001 * ms, recv: 0, send: 990 * ms, hb: false, dead: true},
		{now: 5000 * ms, recv: 0, send: 4990 * ms, paused: true, hb: false, dead: false},
	} {
		hb, dead := livenessCheck(c.now, c.recv, c.send, 100*time.Millisecond, time.Second, c.paused, 0)
		if hb != c.hb || dead != c.dead {
			t.Errorf("%+v: hb %v dead %v", c, hb, dead)
		}
	}
}

func TestLocalPause(t *testing.T) {
	ms := int64(time.Millisecond)
	period := 25 * time.Millisecond
	for _, c := range []struct {
		now, last int64
		want      bool
	}{
		{now: 25 * ms, last: 0, want: false},
		{now: 50 * ms, last: 0, want: false},
		{now: 51 * ms, last: 0, want: true},
		{now: 1000 * ms, last: 500 * ms, want: true},
	} {
		if got := localPause(c.now, c.last, period); got != c.want {
			t.Errorf("localPause(%d ms, %d ms, %v) = %v", c.now/ms, c.last/ms, period, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := testConfig().withDefaults()
	if err := good.validate(true); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Config){
		"no hash":         func(c *Config) { c.ConfigHash = [32]byte{} },
		"window < entry":  func(c *Config) { c.WindowBytes = c.MaxEntryBytes },
		"timeout":         func(c *Config) { c.Timeout = c.HeartbeatInterval },
		"compression":     func(c *Config) { c.Compression = 9 },
		"ack mode":        func(c *Config) { c.AckMode = 9 },
		"huge entry":      func(c *Config) { c.MaxEntryBytes = 1 << 30; c.WindowBytes = 2 << 30 },
		"negative delay":  func(c *Config) { c.BatchDelay = -1 },
		"long delay":      func(c *Config) { c.BatchDelay = 2 * c.HeartbeatInterval },
		"negative window": func(c *Config) { c.WindowEntries = -1 },
	} {
		c := good
		edit(&c)
		wantErr(t, c.validate(true), ErrInvalidConfig)
		_ = name
	}
}

func dump(c *senderCore) string {
	s := fmt.Sprintf("acked %d sent %d next %d cursor %d:", c.acked, c.sent, c.next, c.cursor)
	for _, b := range c.batches {
		s += fmt.Sprintf(" [%d+%d sealed=%v]", b.first, b.count, b.sealed)
	}
	return s
}

func TestStillCredit(t *testing.T) {
	ms := int64(time.Millisecond)
	p, to := 50*time.Millisecond, time.Second
	if c := stillCredit(0, false, 50*ms, p, to); c != 0 {
		t.Errorf("an on-time tick: %d ms", c/ms)
	}
	if c := stillCredit(0, false, 450*ms, p, to); c != 400*ms {
		t.Errorf("a 400 ms pause: %d ms", c/ms)
	}
	if c := stillCredit(400*ms, true, 60*ms, p, to); c != 10*ms {
		t.Errorf("heard from the peer, then 10 ms late: %d ms", c/ms)
	}
	if c := stillCredit(900*ms, false, 500*ms, p, to); c != int64(to) {
		t.Errorf("capped: %d ms", c/ms)
	}
}

// judgeRun feeds a silenceJudge ticks every period, with the host standing
// still where stall says (a tick that comes late by that much), and the
// peer's frames at the times in frames (each read at the first tick after
// it, as the reader would). It returns when the judge declared the peer
// dead (-1: never, within end).
func judgeRun(period, timeout time.Duration, stall func(tick int) time.Duration, frames []int64, end int64) int64 {
	cfg := Config{HeartbeatInterval: 2 * period, Timeout: timeout}
	j := newSilenceJudge(0, 0, period, &cfg)
	now, recv := int64(0), int64(0)
	for i := 0; now < end; i++ {
		now += int64(period) + int64(stall(i))
		for len(frames) > 0 && frames[0] <= now {
			recv, frames = now, frames[1:]
		}
		if _, dead := j.tick(now, recv, now, false); dead {
			return now
		}
	}
	return -1
}

func TestSilenceJudge(t *testing.T) {
	ms := int64(time.Millisecond)
	period, timeout := 50*time.Millisecond, time.Second
	none := func(int) time.Duration { return 0 }
	every := func(step int64, until int64) []int64 {
		var f []int64
		for x := step; x < until; x += step {
			f = append(f, x)
		}
		return f
	}
	// A live peer heard every 100 ms: never dead.
	if at := judgeRun(period, timeout, none, every(100*ms, 20000*ms), 20000*ms); at != -1 {
		t.Fatalf("live peer declared dead at %d ms", at/ms)
	}
	// A dead peer (silent after 1 s): dead one timeout later, give or
	// take a tick.
	if at := judgeRun(period, timeout, none, every(100*ms, 1000*ms), 10000*ms); at < 1900*ms || at > 2100*ms {
		t.Fatalf("dead peer declared at %d ms, want about 1900-2000", at/ms)
	}
	// The host stands still 1.5 s (ticks stop), then the peer's frames
	// that were waiting come in within 150 ms: no verdict. This is the
	// false alarm both sides of a pair on one starved host raised.
	stallAt := func(tick int) time.Duration {
		if tick == 40 {
			return 1500 * time.Millisecond
		}
		return 0
	}
	var frames []int64
	for _, f := range every(100*ms, 20000*ms) {
		if f <= 2000*ms || f >= 3700*ms { // nothing readable during the stall and 150 ms after
			frames = append(frames, f)
		}
	}
	if at := judgeRun(period, timeout, stallAt, frames, 20000*ms); at != -1 {
		t.Fatalf("a host stall of 1.5 s made the live peer dead at %d ms", at/ms)
	}
	// The same with the many small stalls of an overloaded host: every
	// tick 40 ms late, the peer heard at most every 1.4 s of wall time.
	slow := func(int) time.Duration { return 40 * time.Millisecond }
	if at := judgeRun(period, timeout, slow, every(1400*ms, 30000*ms), 30000*ms); at != -1 {
		t.Fatalf("a starved host (ticks 40 ms late) declared a live peer dead at %d ms", at/ms)
	}
	// A side starved for good still finds a dead peer: every tick 200 ms
	// late, the peer silent after 1 s: within twice the timeout plus the
	// pauses.
	starved := func(int) time.Duration { return 200 * time.Millisecond }
	if at := judgeRun(period, timeout, starved, every(100*ms, 1000*ms), 60000*ms); at == -1 || at > 3500*ms {
		t.Fatalf("a starved side found the dead peer at %d ms (-1: never), want within 3.5 s", at/ms)
	}
}
