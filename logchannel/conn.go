package logchannel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
)

const (
	readBufferSize     = 8 << 10 // small: a large payload is read past it, not copied through it
	writeBufferSize    = 64 << 10
	maxBatchesPerWrite = 64
	maxWriteBytes      = 256 << 10 // per write: keeps acks and appends flowing during a write
	minCompressBytes   = 512       // smaller frames go raw
)

// frameReader reads and checks whole frames from a connection.
type frameReader struct {
	br         *bufio.Reader
	maxPayload int
	maxEntry   int
	hdr        [headerLen]byte
	scratch    []byte // compressed payloads land here before decoding
	alloc      func(n int) []byte
}

func newFrameReader(conn net.Conn, maxPayload, maxEntry int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(conn, readBufferSize), maxPayload: maxPayload, maxEntry: maxEntry,
		alloc: func(n int) []byte { return make([]byte, n) }}
}

// read returns the next frame. A data payload is in a buffer from alloc
// (data entries alias it).
func (r *frameReader) read() (header, []byte, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		switch err {
		case io.EOF:
			return header{}, nil, fmt.Errorf("logchannel: %w (end of stream)", ErrPeerClosed)
		case io.ErrUnexpectedEOF:
			return header{}, nil, errorf(ErrTruncated, "stream ended inside a frame header")
		}
		return header{}, nil, fmt.Errorf("logchannel: %w: reading frame header: %w", ErrNetwork, err)
	}
	h, err := parseHeader(r.hdr[:], r.maxPayload)
	if err != nil {
		return h, nil, err
	}
	var wire, dst []byte
	if h.codec() == codecNone {
		if h.typ == frameData {
			wire = r.alloc(int(h.wireLen))
		} else {
			wire = make([]byte, h.wireLen)
		}
	} else {
		dst = r.alloc(int(h.rawLen))
		if cap(r.scratch) < int(h.wireLen) {
			r.scratch = make([]byte, h.wireLen)
		}
		wire = r.scratch[:h.wireLen]
	}
	if _, err := io.ReadFull(r.br, wire); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return h, nil, errorf(ErrTruncated, "stream ended inside the payload of a %v frame (seq %d, %d bytes)", h.typ, h.seq, h.wireLen)
		}
		return h, nil, fmt.Errorf("logchannel: %w: reading %v frame payload: %w", ErrNetwork, h.typ, err)
	}
	raw, err := decodePayload(&h, wire, r.maxEntry, dst)
	return h, raw, err
}

// frameWaiting reports whether a whole frame is already buffered, so that
// reading it cannot block.
func (r *frameReader) frameWaiting() bool {
	n := r.br.Buffered()
	if n < headerLen {
		return false
	}
	b, _ := r.br.Peek(headerLen)
	return n-headerLen >= int(binary.LittleEndian.Uint32(b[4:]))
}

// frameWriter writes frames. On a TCP or Unix socket a batch of frames goes
// out in one writev with no copy; on other conns (TLS, in-memory) through a
// bufio.Writer so that TLS records are not one per header.
type frameWriter struct {
	conn  net.Conn
	vec   bool
	bw    *bufio.Writer
	codec Compression

	hdrs [maxBatchesPerWrite + 1][headerLen]byte
	vecs [2*maxBatchesPerWrite + 2][]byte
	nvec int
	comp [maxBatchesPerWrite][]byte
}

func newFrameWriter(conn net.Conn, codec Compression) *frameWriter {
	w := &frameWriter{conn: conn, codec: codec}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		w.vec = true
	default:
		w.bw = bufio.NewWriterSize(conn, writeBufferSize)
	}
	return w
}

func (w *frameWriter) add(i int, h *header, payload []byte) {
	putHeader(&w.hdrs[i], h)
	w.vecs[w.nvec] = w.hdrs[i][:]
	w.nvec++
	if len(payload) > 0 {
		w.vecs[w.nvec] = payload
		w.nvec++
	}
}

func (w *frameWriter) flush() error {
	var err error
	if w.vec {
		bufs := net.Buffers(w.vecs[:w.nvec])
		_, err = bufs.WriteTo(w.conn)
	} else {
		for _, b := range w.vecs[:w.nvec] {
			if _, err = w.bw.Write(b); err != nil {
				break
			}
		}
		if err == nil {
			err = w.bw.Flush()
		}
	}
	clear(w.vecs[:w.nvec])
	w.nvec = 0
	if err != nil {
		return fmt.Errorf("logchannel: %w: writing: %w", ErrNetwork, err)
	}
	return nil
}

// writeData writes one data frame per batch (len(bs) <= maxBatchesPerWrite),
// optionally followed by a control frame (typ != 0).
func (w *frameWriter) writeData(bs []*sendBatch, typ frameType, seq uint64) error {
	for i, b := range bs {
		h := header{typ: frameData, seq: b.first, count: uint32(b.count), rawLen: uint32(len(b.data)), payloadCRC: b.crc}
		payload := b.data
		if w.codec == CompressS2 && len(payload) >= minCompressBytes {
			c := s2.Encode(w.comp[i][:cap(w.comp[i])], payload)
			w.comp[i] = c
			if len(c) < len(payload)-len(payload)/8 {
				payload = c
				h.flags = codecS2
			}
		}
		h.wireLen = uint32(len(payload))
		w.add(i, &h, payload)
	}
	if typ != 0 {
		w.add(len(bs), &header{typ: typ, seq: seq}, nil)
	}
	return w.flush()
}

// writeControl writes an ack, heartbeat or close frame.
func (w *frameWriter) writeControl(typ frameType, seq uint64) error {
	return w.writeData(nil, typ, seq)
}

// writeHandshake writes a hello, welcome or reject frame.
func (w *frameWriter) writeHandshake(typ frameType, payload []byte) error {
	w.add(0, &header{typ: typ, wireLen: uint32(len(payload)), rawLen: uint32(len(payload)), payloadCRC: crc32c(payload)}, payload)
	return w.flush()
}

// livenessCheck is the pure heartbeat/timeout rule. Times are nanoseconds
// on one monotonic clock. paused: the side is not reading on purpose (its
// buffer is full), so silence proves nothing. still: how much of the
// silence this side itself stood still for (stillCredit), which does not
// count against the peer.
func livenessCheck(now, lastRecv, lastSend int64, interval, timeout time.Duration, paused bool, still int64) (heartbeat, timedOut bool) {
	heartbeat = now-lastSend >= int64(interval)
	timedOut = !paused && now-lastRecv-still > int64(timeout)
	return
}

// stillCredit is how much of a silence this side itself stood still for:
// the sum of its liveness ticks' lateness (each beyond one period) since
// the peer was last heard from, at most the timeout. A verdict of silence
// subtracts it, so the peer is judged only on time this side was running
// and able to read: a host that stops scheduling its processes (an
// overloaded emulated host; a real one under a stall) stalls both sides
// of a pair on it alike, and neither blames the other for the host's
// pause. Capped at one timeout, a side starved for good still detects a
// dead peer, within twice the timeout plus its own pauses.
//
// credit is the running sum, heard whether lastRecv moved since the
// previous tick (a frame arrived: the sum starts again), gap the time
// since the previous tick.
func stillCredit(credit int64, heard bool, gap int64, period, timeout time.Duration) int64 {
	if heard {
		credit = 0
	}
	if late := gap - int64(period); late > 0 {
		credit += late
	}
	return min(credit, int64(timeout))
}

// silenceJudge is the tick loop's failure detector as a value: fed each
// liveness tick's clock readings, it says when to send a heartbeat and
// when the peer is dead. It reads no clock itself.
type silenceJudge struct {
	period, interval, timeout time.Duration

	lastTick   int64 // the previous tick
	deferred   bool  // the previous tick put off a verdict (localPause)
	credit     int64 // this side's own pauses since the peer was last heard (stillCredit)
	heardAt    int64 // lastRecv at the previous tick
	longestGap int64 // this side's longest tick gap, for the verdict's message
	lastRecv   int64
	lastSend   int64
}

func newSilenceJudge(now, lastRecv int64, period time.Duration, cfg *Config) *silenceJudge {
	return &silenceJudge{period: period, interval: cfg.HeartbeatInterval, timeout: cfg.Timeout, lastTick: now, heardAt: lastRecv}
}

// tick judges one liveness tick at now.
func (j *silenceJudge) tick(now, lastRecv, lastSend int64, paused bool) (heartbeat, dead bool) {
	gap := now - j.lastTick
	j.credit = stillCredit(j.credit, lastRecv != j.heardAt, gap, j.period, j.timeout)
	j.heardAt, j.lastRecv, j.lastSend = lastRecv, lastRecv, lastSend
	heartbeat, dead = livenessCheck(now, lastRecv, lastSend, j.interval, j.timeout, paused, j.credit)
	wasPaused := localPause(now, j.lastTick, j.period)
	j.longestGap = max(j.longestGap, gap)
	j.lastTick = now
	if dead && wasPaused && !j.deferred {
		// This process did not run for a while (its host starved):
		// frames that arrived meanwhile may still be unread. Give the
		// reader one period before judging; only once in a row, so a
		// side starved for good still detects a dead peer.
		j.deferred = true
		return heartbeat, false
	}
	j.deferred = false
	return heartbeat, dead
}

// verdict is the failure's message. It says how much of the silence this
// side itself stood still for, when it last sent and its longest pause: a
// silence seen by both sides of a pair whose own ticks were on time and
// who both kept sending is the link's, not a host's.
func (j *silenceJudge) verdict(now int64, peer string) string {
	ms := func(d int64) time.Duration { return time.Duration(d).Round(time.Millisecond) }
	return fmt.Sprintf("nothing from the %s for %v (timeout %v; of that, this side stood still %v; it sent %v ago, its longest pause %v)",
		peer, ms(now-j.lastRecv), j.timeout, ms(j.credit), ms(now-j.lastSend), ms(j.longestGap))
}

// localPause reports whether this side itself stood still since the
// previous liveness tick: the tick came more than two periods late, so the
// process (or its whole host) was not scheduled, and the peer's frames may
// be waiting unread in the socket. A verdict of silence made right then
// would blame the peer for this side's pause (Corosync's "process pause
// detected" is the same idea).
func localPause(now, lastTick int64, period time.Duration) bool {
	return now-lastTick > 2*int64(period)
}

// liveness holds the clock readings that the reader, writer and ticker
// share without a lock.
type liveness struct {
	start    time.Time
	lastRecv atomic.Int64
	lastSend atomic.Int64
	paused   atomic.Bool
}

func newLiveness() *liveness { return &liveness{start: time.Now()} }

func (l *liveness) now() int64 { return int64(time.Since(l.start)) }

// tickPeriod is how often the ticker checks liveness.
func tickPeriod(cfg *Config) time.Duration {
	return max(min(cfg.HeartbeatInterval/2, cfg.Timeout/4), time.Millisecond)
}

// handshakeDeadline bounds IO on conn by ctx and cfg.HandshakeTimeout until
// the returned function is called.
func handshakeDeadline(ctx context.Context, conn net.Conn, cfg *Config) (stop func()) {
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	cancel := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		cancel()
		conn.SetDeadline(time.Time{})
	}
}

// handshakeErr turns an IO error during the handshake into a clear error.
func handshakeErr(ctx context.Context, what string, err error) error {
	ctxErr := ctx.Err()
	if d, ok := ctx.Deadline(); ok && ctxErr == nil && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		ctxErr = context.DeadlineExceeded // the conn deadline fired a moment before ctx's timer
	}
	if ctxErr != nil {
		return fmt.Errorf("logchannel: %w: %s: %w (%w)", ErrHandshake, what, ctxErr, err)
	}
	if errors.Is(err, ErrVersion) || errors.Is(err, ErrConfigMismatch) || errors.Is(err, ErrHandshake) || errors.Is(err, ErrAuth) || errors.Is(err, ErrInvalidConfig) {
		return err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" { // a TLS alert from the peer
		return fmt.Errorf("logchannel: %w: %s: the peer refused our TLS certificate: %w", ErrAuth, what, err)
	}
	return fmt.Errorf("logchannel: %w: %s: %w", ErrHandshake, what, err)
}

// openConn begins a handshake on raw: it puts the handshake deadline on
// the connection and runs TLS if configured. The caller calls stop once the
// channel handshake is done. On error raw is closed.
func openConn(ctx context.Context, raw net.Conn, cfg *Config, sender bool) (conn net.Conn, stop func(), err error) {
	stop = handshakeDeadline(ctx, raw, cfg)
	conn, err = startTLS(ctx, raw, cfg, sender)
	if err != nil {
		stop()
		raw.Close()
		role := "receiver"
		if sender {
			role = "sender"
		}
		return nil, nil, handshakeErr(ctx, role, err)
	}
	return conn, stop, nil
}

// startTLS runs the TLS 1.3 handshake with mutual authentication and
// checks its outcome (checkPeer).
func startTLS(ctx context.Context, conn net.Conn, cfg *Config, sender bool) (net.Conn, error) {
	if cfg.TLS == nil {
		return conn, nil
	}
	tc := cfg.TLS.Clone()
	tc.MinVersion = tls.VersionTLS13
	var t *tls.Conn
	if sender {
		t = tls.Client(conn, tc)
	} else {
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		if get := tc.GetConfigForClient; get != nil {
			tc.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				return checkConfigForClient(get(hi))
			}
		}
		t = tls.Server(conn, tc)
	}
	if err := t.HandshakeContext(ctx); err != nil {
		if errors.Is(err, ErrInvalidConfig) { // from checkConfigForClient
			return nil, err
		}
		return nil, fmt.Errorf("logchannel: %w: TLS handshake: %w", ErrAuth, err)
	}
	if err := checkPeer(t.ConnectionState(), sender); err != nil {
		return nil, err
	}
	return t, nil
}

// checkConfigForClient holds a config returned by the receiver's
// GetConfigForClient to the receiver's rules, at handshake time, and
// returns a copy with TLS 1.3 and verified client certificates forced.
func checkConfigForClient(c *tls.Config, err error) (*tls.Config, error) {
	if err != nil || c == nil { // nil: crypto/tls uses the (checked) config itself
		return c, err
	}
	if why := tlsWeakness(c, false, true); why != "" {
		return nil, fmt.Errorf("%w: GetConfigForClient returned a config that would weaken the check of the sender's certificate: %s", ErrInvalidConfig, why)
	}
	c = c.Clone()
	c.MinVersion = tls.VersionTLS13
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

// checkPeer is the check after every TLS handshake, whatever the config
// let through: TLS 1.3, and a peer certificate chain verified against the
// configured CAs (RootCAs on the sender, ClientCAs on the receiver).
func checkPeer(cs tls.ConnectionState, sender bool) error {
	peer := "sender"
	if sender {
		peer = "receiver"
	}
	switch {
	case !cs.HandshakeComplete:
		return errorf(ErrAuth, "TLS handshake with the %s not complete", peer)
	case cs.Version != tls.VersionTLS13:
		return errorf(ErrAuth, "TLS version %#x with the %s, want 1.3", cs.Version, peer)
	case len(cs.PeerCertificates) == 0:
		return errorf(ErrAuth, "the %s presented no certificate", peer)
	case len(cs.VerifiedChains) == 0:
		return errorf(ErrAuth, "the %s's certificate (subject %q, issuer %q) was not verified against the configured CA", peer,
			cs.PeerCertificates[0].Subject, cs.PeerCertificates[0].Issuer)
	}
	return nil
}

// writeFailed is called by a writer whose write failed. The reader usually
// learns why at the same moment (the peer's close frame, a reset), and its
// explanation is the better one, so it gets a short head start.
func writeFailed(done <-chan struct{}, cfg *Config) {
	t := time.NewTimer(min(cfg.Timeout, 200*time.Millisecond))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
