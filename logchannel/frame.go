package logchannel

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/klauspost/compress/s2"
)

// Wire constants. See PROTOCOL.md for the layout.
const (
	frameMagic      = 0xF7
	ProtocolVersion = 1 // the version this package speaks

	headerLen           = 32
	maxFramePayload     = 64 << 20 // protocol limit on a frame's payload, raw or compressed
	maxHandshakePayload = 4096
	maxVarintLen        = binary.MaxVarintLen32 // entry length prefix; entries < 64 MiB
	maxIntervalMicros   = math.MaxUint32

	flagCodecMask = 0x03 // bits 0–1: payload codec
	codecNone     = 0
	codecS2       = 1
)

// frameType is byte 2 of the header.
type frameType uint8

const (
	frameHello     frameType = 1 // sender → receiver, first frame
	frameWelcome   frameType = 2 // receiver → sender, handshake accepted
	frameReject    frameType = 3 // receiver → sender, handshake refused
	frameData      frameType = 4 // sender → receiver, a batch of entries
	frameAck       frameType = 5 // receiver → sender, cumulative ack
	frameHeartbeat frameType = 6 // both ways, liveness when idle
	frameClose     frameType = 7 // both ways, orderly end
)

func (t frameType) String() string {
	switch t {
	case frameHello:
		return "hello"
	case frameWelcome:
		return "welcome"
	case frameReject:
		return "reject"
	case frameData:
		return "data"
	case frameAck:
		return "ack"
	case frameHeartbeat:
		return "heartbeat"
	case frameClose:
		return "close"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// header is a decoded frame header.
type header struct {
	typ        frameType
	flags      uint8
	wireLen    uint32 // payload bytes on the wire
	rawLen     uint32 // payload bytes after decompression
	count      uint32 // data: entries in the frame
	seq        uint64 // data: first entry; ack/heartbeat: cumulative seq; close: last seq
	payloadCRC uint32 // CRC32C of the wire payload
}

func (h *header) codec() uint8 { return h.flags & flagCodecMask }

// lastSeq is the sequence number of a data frame's last entry.
func (h *header) lastSeq() uint64 { return h.seq + uint64(h.count) - 1 }

// putHeader writes h into b, computing the header CRC.
func putHeader(b *[headerLen]byte, h *header) {
	b[0] = frameMagic
	b[1] = ProtocolVersion
	b[2] = byte(h.typ)
	b[3] = h.flags
	binary.LittleEndian.PutUint32(b[4:], h.wireLen)
	binary.LittleEndian.PutUint32(b[8:], h.rawLen)
	binary.LittleEndian.PutUint32(b[12:], h.count)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint32(b[24:], h.payloadCRC)
	binary.LittleEndian.PutUint32(b[28:], crc32c(b[:28]))
}

// parseHeader decodes and checks a header. maxPayload bounds wireLen and
// rawLen so that no allocation is ever driven by an unchecked length.
// The header CRC is checked before the version so that a damaged byte is
// reported as corruption; a peer of another version still sends handshake
// frames in this layout (a promise of every version), so a real version
// mismatch passes the CRC and is reported as such.
func parseHeader(b []byte, maxPayload int) (header, error) {
	var h header
	if len(b) < headerLen {
		return h, errorf(ErrTruncated, "header has %d of %d bytes", len(b), headerLen)
	}
	if b[0] != frameMagic {
		return h, errorf(ErrCorrupt, "bad magic %#02x, want %#02x", b[0], frameMagic)
	}
	if got, want := crc32c(b[:28]), binary.LittleEndian.Uint32(b[28:]); got != want {
		return h, errorf(ErrCorrupt, "header CRC32C %#08x, header says %#08x", got, want)
	}
	if b[1] != ProtocolVersion {
		return h, errorf(ErrVersion, "peer speaks protocol version %d, this side %d", b[1], ProtocolVersion)
	}
	h = header{
		typ:        frameType(b[2]),
		flags:      b[3],
		wireLen:    binary.LittleEndian.Uint32(b[4:]),
		rawLen:     binary.LittleEndian.Uint32(b[8:]),
		count:      binary.LittleEndian.Uint32(b[12:]),
		seq:        binary.LittleEndian.Uint64(b[16:]),
		payloadCRC: binary.LittleEndian.Uint32(b[24:]),
	}
	if err := h.check(maxPayload); err != nil {
		return header{}, err
	}
	return h, nil
}

// check enforces the per-type rules on a header.
func (h *header) check(maxPayload int) error {
	maxPayload = min(maxPayload, maxFramePayload)
	if h.wireLen > uint32(maxPayload) || h.rawLen > uint32(maxPayload) {
		return errorf(ErrCorrupt, "%v frame payload %d bytes (raw %d) exceeds limit %d", h.typ, h.wireLen, h.rawLen, maxPayload)
	}
	switch h.typ {
	case frameData:
		if h.flags&^flagCodecMask != 0 || h.codec() > codecS2 {
			return errorf(ErrCorrupt, "data frame has unknown flags %#02x", h.flags)
		}
		if h.codec() == codecNone && h.rawLen != h.wireLen {
			return errorf(ErrCorrupt, "uncompressed data frame with raw length %d != wire length %d", h.rawLen, h.wireLen)
		}
		if h.count == 0 || h.rawLen < h.count {
			return errorf(ErrCorrupt, "data frame with %d entries in %d bytes", h.count, h.rawLen)
		}
		if h.seq == 0 || h.seq+uint64(h.count) < h.seq {
			return errorf(ErrCorrupt, "data frame with bad sequence %d count %d", h.seq, h.count)
		}
	case frameAck, frameHeartbeat, frameClose:
		if h.flags != 0 || h.wireLen != 0 || h.rawLen != 0 || h.count != 0 {
			return errorf(ErrCorrupt, "%v frame with flags %#x, payload %d, count %d", h.typ, h.flags, h.wireLen, h.count)
		}
	case frameHello, frameWelcome, frameReject:
		if h.flags != 0 || h.count != 0 || h.rawLen != h.wireLen || h.wireLen > maxHandshakePayload {
			return errorf(ErrCorrupt, "%v frame with flags %#x, payload %d (raw %d), count %d", h.typ, h.flags, h.wireLen, h.rawLen, h.count)
		}
	default:
		return errorf(ErrCorrupt, "unknown frame type %d", uint8(h.typ))
	}
	return nil
}

// decodePayload decompresses (into dst when it is large enough), checks the
// CRC of the raw payload, and for a data frame checks the entry encoding.
// It returns the raw payload: wire itself when it is not compressed. The
// CRC covers the raw bytes so that it protects the entries end to end,
// through the compressor and decompressor too, and so that the sender can
// compute it as entries are appended; the S2 decoder is safe on any input,
// and rawLen was bounded by parseHeader before anything was allocated.
func decodePayload(h *header, wire []byte, maxEntry int, dst []byte) ([]byte, error) {
	raw := wire
	if h.codec() == codecS2 {
		n, err := s2.DecodedLen(wire)
		if err != nil || n != int(h.rawLen) {
			return nil, errorf(ErrCorrupt, "data frame seq %d: s2 payload decodes to %d bytes, header says %d (%v)", h.seq, n, h.rawLen, err)
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		raw, err = s2.Decode(dst[:n], wire)
		if err != nil {
			return nil, errorf(ErrCorrupt, "data frame seq %d: s2: %v", h.seq, err)
		}
	}
	if got := crc32c(raw); got != h.payloadCRC {
		return nil, errorf(ErrCorrupt, "%v frame seq %d: payload CRC32C %#08x, header says %#08x", h.typ, h.seq, got, h.payloadCRC)
	}
	if h.typ == frameData {
		if err := checkEntries(raw, h.count, maxEntry); err != nil {
			return nil, errorf(ErrCorrupt, "data frame seq %d: %v", h.seq, err)
		}
	}
	return raw, nil
}

// decodeFrame decodes one whole frame from the start of b: the pure
// counterpart of frameReader.read, and the fuzz target. n is the number of
// bytes used.
func decodeFrame(b []byte, maxPayload, maxEntry int) (h header, raw []byte, n int, err error) {
	if h, err = parseHeader(b, maxPayload); err != nil {
		return header{}, nil, 0, err
	}
	end := headerLen + int(h.wireLen)
	if len(b) < end {
		return header{}, nil, 0, errorf(ErrTruncated, "%v frame needs %d payload bytes, %d present", h.typ, h.wireLen, len(b)-headerLen)
	}
	if raw, err = decodePayload(&h, b[headerLen:end], maxEntry, nil); err != nil {
		return header{}, nil, 0, err
	}
	return h, raw, end, nil
}

// appendFrame appends a whole frame with an uncompressed payload to dst.
func appendFrame(dst []byte, typ frameType, seq uint64, count uint32, payload []byte) []byte {
	h := header{typ: typ, seq: seq, count: count, wireLen: uint32(len(payload)), rawLen: uint32(len(payload)), payloadCRC: crc32c(payload)}
	var hb [headerLen]byte
	putHeader(&hb, &h)
	dst = append(dst, hb[:]...)
	return append(dst, payload...)
}

// appendEntry appends one entry in payload encoding: uvarint length, bytes.
func appendEntry(dst, entry []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(entry)))
	return append(dst, entry...)
}

// encodedLen is the payload size of an entry of n bytes.
func encodedLen(n int) int {
	switch {
	case n < 1<<7:
		return n + 1
	case n < 1<<14:
		return n + 2
	case n < 1<<21:
		return n + 3
	case n < 1<<28:
		return n + 4
	}
	return n + 5
}

// checkEntries verifies that raw holds exactly count well-formed entries,
// none longer than maxEntry.
func checkEntries(raw []byte, count uint32, maxEntry int) error {
	for i := uint32(0); i < count; i++ {
		n, k := binary.Uvarint(raw)
		if k <= 0 {
			return fmt.Errorf("entry %d of %d: bad length prefix", i+1, count)
		}
		if n > uint64(maxEntry) || n > uint64(len(raw)-k) {
			return fmt.Errorf("entry %d of %d: length %d exceeds limit %d or the %d bytes left", i+1, count, n, maxEntry, len(raw)-k)
		}
		raw = raw[k+int(n):]
	}
	if len(raw) != 0 {
		return fmt.Errorf("%d bytes after the last of %d entries", len(raw), count)
	}
	return nil
}

// nextEntry splits the first entry off a checked payload.
func nextEntry(data []byte) (entry, rest []byte) {
	n, k := binary.Uvarint(data)
	end := k + int(n)
	return data[k:end:end], data[end:]
}
