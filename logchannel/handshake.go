package logchannel

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"
)

// The handshake is three small fixed-layout messages in frames of their own
// types. They are encoded by hand, like the frame header, rather than with
// protobuf: the layout is a handful of fixed-width fields checked once per
// connection, the version byte in the header already governs evolution, and
// one hand-written codec for the whole wire format means one fuzz target and
// no generated code or protoc in the build.

// hello is the sender's first frame.
type hello struct {
	configHash    [32]byte
	streamID      uint64 // random per Sender; a Receiver only resumes its own stream
	firstRetained uint64 // lowest seq the sender can still send (acked+1)
	lastAppended  uint64 // highest seq appended so far
	maxFrame      uint32 // largest payload the sender will send
	heartbeatUS   uint32 // sender's heartbeat interval, µs
}

const helloLen = 32 + 8 + 8 + 8 + 4 + 4

func (m *hello) encode() []byte {
	b := make([]byte, helloLen)
	copy(b, m.configHash[:])
	binary.LittleEndian.PutUint64(b[32:], m.streamID)
	binary.LittleEndian.PutUint64(b[40:], m.firstRetained)
	binary.LittleEndian.PutUint64(b[48:], m.lastAppended)
	binary.LittleEndian.PutUint32(b[56:], m.maxFrame)
	binary.LittleEndian.PutUint32(b[60:], m.heartbeatUS)
	return b
}

func decodeHello(b []byte) (hello, error) {
	var m hello
	if len(b) != helloLen {
		return m, errorf(ErrHandshake, "hello payload has %d bytes, want %d", len(b), helloLen)
	}
	copy(m.configHash[:], b)
	m.streamID = binary.LittleEndian.Uint64(b[32:])
	m.firstRetained = binary.LittleEndian.Uint64(b[40:])
	m.lastAppended = binary.LittleEndian.Uint64(b[48:])
	m.maxFrame = binary.LittleEndian.Uint32(b[56:])
	m.heartbeatUS = binary.LittleEndian.Uint32(b[60:])
	if m.firstRetained == 0 || m.firstRetained > m.lastAppended+1 {
		return m, errorf(ErrHandshake, "hello with first retained seq %d and last appended %d", m.firstRetained, m.lastAppended)
	}
	return m, nil
}

// welcome is the receiver's answer when it accepts.
type welcome struct {
	received    uint64 // last seq in the receiver's buffer: the sender resumes at received+1
	acked       uint64 // the receiver's current cumulative ack
	heartbeatUS uint32
}

const welcomeLen = 8 + 8 + 4

func (m *welcome) encode() []byte {
	b := make([]byte, welcomeLen)
	binary.LittleEndian.PutUint64(b, m.received)
	binary.LittleEndian.PutUint64(b[8:], m.acked)
	binary.LittleEndian.PutUint32(b[16:], m.heartbeatUS)
	return b
}

func decodeWelcome(b []byte) (welcome, error) {
	var m welcome
	if len(b) != welcomeLen {
		return m, errorf(ErrHandshake, "welcome payload has %d bytes, want %d", len(b), welcomeLen)
	}
	m.received = binary.LittleEndian.Uint64(b)
	m.acked = binary.LittleEndian.Uint64(b[8:])
	m.heartbeatUS = binary.LittleEndian.Uint32(b[16:])
	if m.acked > m.received {
		return m, errorf(ErrHandshake, "welcome acks %d beyond received %d", m.acked, m.received)
	}
	return m, nil
}

// rejectCode says why the receiver refused; the sender maps it back to a
// sentinel error.
type rejectCode uint8

const (
	rejectVersion rejectCode = 1
	rejectConfig  rejectCode = 2
	rejectStream  rejectCode = 3 // another stream, or a resume that cannot be served
	rejectLimits  rejectCode = 4
	rejectBad     rejectCode = 5 // malformed hello
)

func (c rejectCode) sentinel() error {
	switch c {
	case rejectVersion:
		return ErrVersion
	case rejectConfig:
		return ErrConfigMismatch
	}
	return ErrHandshake
}

const maxRejectMessage = 1024

func encodeReject(code rejectCode, msg string) []byte {
	if len(msg) > maxRejectMessage {
		msg = msg[:maxRejectMessage]
	}
	return append([]byte{byte(code)}, msg...)
}

func decodeReject(b []byte) error {
	if len(b) < 1 || len(b) > 1+maxRejectMessage || !utf8.Valid(b[1:]) {
		return errorf(ErrHandshake, "malformed reject frame (%d bytes)", len(b))
	}
	code := rejectCode(b[0])
	return errorf(code.sentinel(), "receiver refused the connection: %s", b[1:])
}

// receiverState is what the receiver knows when it judges a hello.
type receiverState struct {
	configHash  [32]byte
	streamID    uint64 // 0 before the first accepted hello
	received    uint64
	acked       uint64
	maxFrame    int
	timeout     time.Duration
	heartbeatUS uint32
}

// judgeHello is the receiver's decision on a hello: accept (code 0) or
// refuse with a code and a message for both sides' errors.
func judgeHello(st *receiverState, m *hello) (rejectCode, string) {
	switch {
	case m.configHash != st.configHash:
		return rejectConfig, fmt.Sprintf("sender VM config hash %s, receiver %s",
			hex.EncodeToString(m.configHash[:8]), hex.EncodeToString(st.configHash[:8]))
	case st.streamID != 0 && m.streamID != st.streamID:
		return rejectStream, fmt.Sprintf("sender stream %016x is not this receiver's stream %016x (a new primary needs a new receiver)", m.streamID, st.streamID)
	case m.lastAppended < st.received:
		return rejectStream, fmt.Sprintf("receiver holds entries up to %d but the sender has only appended %d", st.received, m.lastAppended)
	case m.firstRetained > st.received+1:
		return rejectStream, fmt.Sprintf("receiver resumes at %d but the sender retains entries from %d only", st.received+1, m.firstRetained)
	case int64(m.maxFrame) > int64(st.maxFrame):
		return rejectLimits, fmt.Sprintf("sender frames up to %d bytes exceed the receiver's limit %d (raise MaxEntryBytes/BatchBytes on the receiver)", m.maxFrame, st.maxFrame)
	case time.Duration(m.heartbeatUS)*time.Microsecond*2 > st.timeout:
		return rejectLimits, fmt.Sprintf("sender heartbeat interval %v is more than half the receiver's timeout %v", time.Duration(m.heartbeatUS)*time.Microsecond, st.timeout)
	}
	return 0, ""
}

// checkWelcome is the sender's check of the receiver's answer against what
// it holds: acked..lastAppended with entries from acked+1 retained.
func checkWelcome(m *welcome, acked, lastAppended uint64, timeout time.Duration) error {
	switch {
	case m.received > lastAppended:
		return errorf(ErrHandshake, "receiver holds entries up to %d but only %d were appended", m.received, lastAppended)
	case m.received < acked:
		return errorf(ErrHandshake, "receiver resumes at %d but entries up to %d were acked and discarded (receiver lost its buffer?)", m.received+1, acked)
	case time.Duration(m.heartbeatUS)*time.Microsecond*2 > timeout:
		return errorf(ErrHandshake, "receiver heartbeat interval %v is more than half the sender's timeout %v", time.Duration(m.heartbeatUS)*time.Microsecond, timeout)
	}
	return nil
}
