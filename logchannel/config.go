package logchannel

import (
	"crypto/tls"
	"fmt"
	"time"
)

// AckMode says when the receiver acknowledges an entry.
type AckMode uint8

const (
	// AckBuffered acks an entry once it is in the receiver's buffer (VMware
	// FT's rule: the backup has the entry, so the primary may release the
	// outputs that depend on it). The default.
	AckBuffered AckMode = iota
	// AckConsumed acks an entry only once the consumer reported it with
	// Receiver.Consumed.
	AckConsumed
)

func (m AckMode) String() string {
	switch m {
	case AckBuffered:
		return "buffered"
	case AckConsumed:
		return "consumed"
	}
	return fmt.Sprintf("AckMode(%d)", uint8(m))
}

// Compression selects the sender's frame compression. The choice is made per
// frame: a frame that does not shrink by at least 1/8 goes uncompressed, and
// the frame header says which, so the receiver needs no setting.
type Compression uint8

const (
	// CompressNone sends frames raw. The default.
	CompressNone Compression = iota
	// CompressS2 compresses frames with S2 (github.com/klauspost/compress/s2),
	// a Snappy-compatible format that runs at GB/s; see the benchmark for
	// the measured ratio and cost against zstd.
	CompressS2
)

func (c Compression) String() string {
	switch c {
	case CompressNone:
		return "none"
	case CompressS2:
		return "s2"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// Defaults for zero Config fields.
const (
	DefaultWindowBytes       = 8 << 20
	DefaultWindowEntries     = 1 << 20
	DefaultMaxEntryBytes     = 1 << 20
	DefaultBatchBytes        = 256 << 10
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultTimeout           = time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
)

// Config configures a Sender or a Receiver. The two sides may use the same
// Config; fields marked "sender" or "receiver" are ignored by the other side.
// Zero fields take the defaults above.
type Config struct {
	// ConfigHash identifies the VM configuration (CPUID table, memory size,
	// devices, kernel...), e.g. its SHA-256. Required (non-zero). The
	// handshake refuses a peer whose hash differs.
	ConfigHash [32]byte

	// TLS, if non-nil, runs TLS 1.3 with mutual certificate authentication
	// over the connection before the handshake. The sender is always the
	// TLS client and the receiver the TLS server, whichever side dialed.
	//
	// The package refuses (ErrInvalidConfig) a config that would let a
	// peer in without a certificate chain verified against the CA the
	// caller named:
	//   - sender: a client certificate (Certificates or
	//     GetClientCertificate), RootCAs (the CA of the receiver's
	//     certificate; nil would mean the system's public CAs) and
	//     ServerName (the name the receiver's certificate must carry) are
	//     required;
	//   - receiver: a certificate (Certificates, GetCertificate or
	//     GetConfigForClient) and ClientCAs are required (VerifyPeerCertificate
	//     and GetConfigForClient add checks, they do not replace it);
	//     ClientAuth must be left zero or be RequireAndVerifyClientCert;
	//   - either: InsecureSkipVerify, and a MaxVersion below TLS 1.3, are
	//     refused.
	// A config returned by the receiver's GetConfigForClient is held to the
	// receiver's rules when it is returned, and the handshake fails if it
	// breaks them. The package clones the config and forces MinVersion =
	// TLS 1.3 and, on the receiver, ClientAuth = RequireAndVerifyClientCert
	// (in configs GetConfigForClient returns too). After the TLS handshake
	// each side also requires TLS 1.3 and a verified certificate chain from
	// its peer, and fails with ErrAuth otherwise. VerifyConnection and
	// VerifyPeerCertificate run as usual, e.g. to check the peer's name on
	// the receiver.
	//
	// TLS nil means plaintext with no authentication: anyone who reaches
	// the connection and knows the ConfigHash can be the peer.
	TLS *tls.Config

	// WindowBytes bounds memory: each side charges its buffers at their
	// capacity, plus about 128 bytes per frame for bookkeeping, so that an
	// entry costs at least its encoding (the entry and its 1–5 byte length
	// prefix) and a frame of small entries its per-frame overhead too.
	// Sender: the entries appended but not yet acked (a frame acked while
	// it is being written counts until the write ends), in buffers shared
	// by consecutive frames; Append blocks while the next entry would
	// exceed it. Receiver: the frames buffered but not yet returned by
	// Next; the receiver stops reading the connection (TCP back-pressure)
	// while a frame does not fit. Either side holds at most one more frame
	// buffer beyond the window (BatchBytes, or one larger entry's), recycled
	// or in use, and an entry larger than the window passes alone. Default
	// 8 MiB. Must hold at least one entry of MaxEntryBytes.
	WindowBytes int
	// WindowEntries bounds the number of entries the same way. Default 1 Mi.
	WindowEntries int
	// MaxEntryBytes is the largest entry Append accepts and the receiver
	// admits. Default 1 MiB.
	MaxEntryBytes int

	// BatchBytes (sender) is the payload size at which a frame is cut;
	// a larger entry travels alone in its frame. Default 256 KiB.
	BatchBytes int
	// BatchDelay (sender) is how long the writer lets a partly filled
	// frame wait for more entries. Zero (default) sends as soon as the
	// writer is free: entries appended while a frame is on its way share
	// the next one, which batches under load and adds no latency when
	// idle. WaitAcked and Flush always send at once. At most
	// HeartbeatInterval; meant to be microseconds to a millisecond.
	BatchDelay time.Duration
	// Compression (sender): CompressNone (default) or CompressS2.
	Compression Compression

	// AckMode (receiver): AckBuffered (default) or AckConsumed.
	AckMode AckMode

	// HeartbeatInterval: each side sends a heartbeat when it has sent
	// nothing for this long. Default 100 ms.
	HeartbeatInterval time.Duration
	// Timeout: a side declares the connection failed when nothing has
	// arrived for this long (a receiver whose buffer is full, and so is not
	// reading, does not count that time). Default 1 s. The handshake
	// refuses a peer whose HeartbeatInterval is more than Timeout/2.
	Timeout time.Duration
	// HandshakeTimeout bounds the TLS handshake plus the channel handshake
	// when the context has no earlier deadline. Default 10 s.
	HandshakeTimeout time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.WindowBytes == 0 {
		c.WindowBytes = DefaultWindowBytes
	}
	if c.WindowEntries == 0 {
		c.WindowEntries = DefaultWindowEntries
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return c
}

// maxFrameBytes is the largest frame payload this side sends or admits:
// one batch, or one maximal entry with its length prefix.
func (c *Config) maxFrameBytes() int {
	return max(c.BatchBytes, c.MaxEntryBytes+maxVarintLen)
}

// Validate reports whether NewSender (sender true) or NewReceiver would
// accept c, TLS requirements included, without a connection: callers can
// refuse a bad configuration before they listen or dial. The error wraps
// ErrInvalidConfig.
func (c Config) Validate(sender bool) error {
	c = c.withDefaults()
	return c.validate(sender)
}

// validate checks a Config that has had withDefaults applied. sender says
// which side's TLS requirements apply.
func (c *Config) validate(sender bool) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ConfigHash == [32]byte{}:
		return bad("ConfigHash is required (the hash of the VM configuration)")
	case c.WindowBytes < 0 || c.WindowEntries < 0 || c.MaxEntryBytes < 0 || c.BatchBytes < 0:
		return bad("negative size")
	case c.MaxEntryBytes > maxFramePayload-maxVarintLen:
		return bad("MaxEntryBytes %d exceeds the protocol limit %d", c.MaxEntryBytes, maxFramePayload-maxVarintLen)
	case c.BatchBytes > maxFramePayload:
		return bad("BatchBytes %d exceeds the protocol limit %d", c.BatchBytes, maxFramePayload)
	case c.WindowBytes < c.MaxEntryBytes+maxVarintLen:
		return bad("WindowBytes %d cannot hold one entry of MaxEntryBytes %d", c.WindowBytes, c.MaxEntryBytes)
	case c.BatchDelay < 0:
		return bad("negative BatchDelay")
	case c.BatchDelay > c.HeartbeatInterval:
		return bad("BatchDelay %v exceeds HeartbeatInterval %v (a waiting frame holds back heartbeats)", c.BatchDelay, c.HeartbeatInterval)
	case c.Compression > CompressS2:
		return bad("unknown Compression %d", c.Compression)
	case c.AckMode > AckConsumed:
		return bad("unknown AckMode %d", c.AckMode)
	case c.HeartbeatInterval < 0 || c.Timeout < 0 || c.HandshakeTimeout < 0:
		return bad("negative duration")
	case c.HeartbeatInterval > maxIntervalMicros*time.Microsecond:
		return bad("HeartbeatInterval %v too long", c.HeartbeatInterval)
	case c.Timeout < 2*c.HeartbeatInterval:
		return bad("Timeout %v is less than twice HeartbeatInterval %v", c.Timeout, c.HeartbeatInterval)
	}
	if c.TLS != nil {
		if why := tlsWeakness(c.TLS, sender, false); why != "" {
			return bad("%s", why)
		}
	}
	return nil
}

// tlsWeakness says why tc would let a peer in without a verified
// certificate chain on this side (or fail every handshake), or returns ""
// if it does not. returned: tc came from the receiver's GetConfigForClient
// (whose own GetConfigForClient crypto/tls ignores).
func tlsWeakness(tc *tls.Config, sender, returned bool) string {
	side := "receiver"
	if sender {
		side = "sender"
	}
	switch {
	case tc.InsecureSkipVerify:
		return fmt.Sprintf("TLS on the %s sets InsecureSkipVerify: the peer's certificate would not be verified", side)
	case tc.MaxVersion != 0 && tc.MaxVersion < tls.VersionTLS13:
		return fmt.Sprintf("TLS on the %s has MaxVersion %#x: the channel needs TLS 1.3", side, tc.MaxVersion)
	}
	if sender {
		switch {
		case len(tc.Certificates) == 0 && tc.GetClientCertificate == nil:
			return "TLS on the sender needs a client certificate, Certificates or GetClientCertificate (mutual authentication)"
		case tc.RootCAs == nil:
			return "TLS on the sender needs RootCAs, the CA that issued the receiver's certificate (nil would trust any public CA)"
		case tc.ServerName == "":
			return "TLS on the sender needs ServerName, the name the receiver's certificate must carry"
		}
		return ""
	}
	switch {
	case len(tc.Certificates) == 0 && tc.GetCertificate == nil && (returned || tc.GetConfigForClient == nil):
		return "TLS on the receiver needs a server certificate, Certificates or GetCertificate"
	case tc.ClientCAs == nil:
		return "TLS on the receiver needs ClientCAs, the CA that issued the sender's certificate (GetConfigForClient and VerifyPeerCertificate do not replace it; nil would trust any public CA)"
	case tc.ClientAuth != tls.NoClientCert && tc.ClientAuth != tls.RequireAndVerifyClientCert:
		return fmt.Sprintf("TLS on the receiver has ClientAuth %v, which lets a sender in without a verified certificate: leave it zero or set RequireAndVerifyClientCert", tc.ClientAuth)
	}
	return ""
}
