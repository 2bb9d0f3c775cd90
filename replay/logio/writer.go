package logio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// errClosed is returned by a Writer used after Close.
var errClosed = errors.New("logio: writer is closed")

// Writer writes a log. It is not safe for concurrent use.
type Writer struct {
	dst     io.Writer
	bw      *bufio.Writer
	buf     []byte                      // marshal buffer, reused across records
	frame   [binary.MaxVarintLen64]byte // length prefix and CRC; a local would escape
	n       int64
	seq     sequence
	records int
	closed  bool
	err     error // first write error; sticky
}

// NewWriter writes the magic, the format version and h to w (buffered) and
// returns a Writer for the events that follow. The caller must Close (or at
// least Flush) the Writer for the data to reach w.
func NewWriter(w io.Writer, h *logpb.Header) (*Writer, error) {
	if h == nil {
		return nil, errors.New("logio: NewWriter: nil header")
	}
	lw := &Writer{dst: w, bw: bufio.NewWriterSize(w, 64<<10)}
	var fh [fileHeaderSize]byte
	copy(fh[:], Magic)
	binary.LittleEndian.PutUint32(fh[len(Magic):], FormatVersion)
	lw.write(fh[:])
	if err := lw.record(h); err != nil {
		return nil, fmt.Errorf("logio: writing header: %w", err)
	}
	return lw, nil
}

// Append writes ev. It refuses, without writing anything, an event that
// would make a bad log: a seq other than the previous seq + 1 (the first is
// 1), an exits count lower than the previous one, an event after End, an
// event without a kind, or one larger than MaxPayload or that would decode
// to more than MaxDecoded (the Reader would refuse it). Such errors wrap
// ErrSequence, ErrTooLarge or describe the event; they do not stop the
// Writer. A write error does, and is returned from then on.
func (w *Writer) Append(ev *logpb.Event) error {
	if w.closed {
		return errClosed
	}
	if w.err != nil {
		return w.err
	}
	if msg := w.seq.check(ev); msg != "" {
		return fmt.Errorf("logio: append: %w: %s", ErrSequence, msg)
	}
	if err := validKind(ev); err != nil {
		return fmt.Errorf("logio: append: %w", err)
	}
	if err := w.record(ev); err != nil {
		return fmt.Errorf("logio: append seq %d: %w", ev.GetSeq(), err)
	}
	w.seq.advance(ev)
	return nil
}

// record frames one message: uvarint length, payload, CRC32C.
func (w *Writer) record(m proto.Message) error {
	var err error
	w.buf, err = proto.MarshalOptions{}.MarshalAppend(w.buf[:0], m)
	if err != nil {
		return err
	}
	if len(w.buf) > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrTooLarge, len(w.buf), MaxPayload)
	}
	if err := checkDecoded(w.buf, m.ProtoReflect().Descriptor()); err != nil {
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	w.write(w.frame[:binary.PutUvarint(w.frame[:], uint64(len(w.buf)))])
	w.write(w.buf)
	binary.LittleEndian.PutUint32(w.frame[:4], crcOf(w.buf))
	w.write(w.frame[:4])
	if w.err != nil {
		return w.err
	}
	w.records++
	return nil
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("logio: write: %w", err)
	}
}

// Flush writes any buffered data to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("logio: flush: %w", err)
	}
	return w.err
}

// Close flushes and, if the underlying writer is an io.Closer, closes it.
// Calling Close again does nothing.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.Flush()
	if c, ok := w.dst.(io.Closer); ok {
		if cerr := c.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("logio: close: %w", cerr)
		}
	}
	return err
}

// Bytes reports how many bytes the log holds so far, buffered ones
// included: after a successful Flush, the size of what w has received.
func (w *Writer) Bytes() int64 { return w.n }

// Seq reports the seq of the last event appended (0 before the first).
func (w *Writer) Seq() uint64 { return w.seq.seq }
