package logchannel

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps exactly one of these
// with %w and says, in its message, what was being done and what was seen, so
// callers test with errors.Is and humans read the message.
var (
	// ErrClosed: the Sender or Receiver was closed by its owner.
	ErrClosed = errors.New("logchannel: closed")
	// ErrVersion: the peer speaks another protocol version.
	ErrVersion = errors.New("protocol version mismatch")
	// ErrConfigMismatch: the peer runs a VM with another configuration hash.
	ErrConfigMismatch = errors.New("VM configuration hash mismatch")
	// ErrHandshake: the handshake failed for another reason (stream identity,
	// resume point, limits, malformed handshake frame, timeout).
	ErrHandshake = errors.New("handshake failed")
	// ErrAuth: TLS failed: the peer presented no valid certificate, or
	// refused ours.
	ErrAuth = errors.New("peer not authenticated")
	// ErrCorrupt: a frame failed its CRC32C, had a bad magic, flag, length or
	// entry encoding, or did not decompress.
	ErrCorrupt = errors.New("corrupt frame")
	// ErrTruncated: the stream ended in the middle of a frame.
	ErrTruncated = errors.New("truncated frame")
	// ErrSequence: a data frame did not start right after the last one
	// (gap or overlap), or an ack went backwards or beyond what was sent.
	ErrSequence = errors.New("sequence error")
	// ErrProtocol: a well-formed frame that is not allowed here (a data
	// frame sent to the sender, an unknown frame type, ...).
	ErrProtocol = errors.New("protocol violation")
	// ErrTimeout: nothing arrived from the peer for Config.Timeout.
	ErrTimeout = errors.New("peer timed out")
	// ErrNetwork: the underlying connection failed (reset, closed,
	// deadline); the original error is wrapped too.
	ErrNetwork = errors.New("connection error")
	// ErrPeerClosed: the peer closed the connection (with a Close frame or
	// a clean end of stream at a frame boundary).
	ErrPeerClosed = errors.New("peer closed the connection")
	// ErrDisconnected: returned by Receiver.Next once every buffered entry
	// has been delivered and the connection has failed; it wraps the cause.
	ErrDisconnected = errors.New("logchannel: disconnected")
	// ErrEntryTooLarge: Append got an entry longer than Config.MaxEntryBytes.
	ErrEntryTooLarge = errors.New("logchannel: entry too large")
	// ErrInvalidConfig: Config.validate found a bad field.
	ErrInvalidConfig = errors.New("logchannel: invalid config")
)

// errorf formats "logchannel: <what>: <sentinel>: <detail>" style errors.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("logchannel: %w: %s", sentinel, fmt.Sprintf(format, args...))
}
