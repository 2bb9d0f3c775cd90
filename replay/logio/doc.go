// Package logio is the on-disk format of the ftkvm event log: a file
// holding a recorded run's header and events (package logpb), written by
// the recorder and read by the replayer and by `ftvm inspect`.
//
// # Layout
//
// All integers are little-endian; a uvarint is encoding/binary's.
//
//	offset  size      field
//	0       8         magic "FTKVMLOG"
//	8       4         format version, uint32 (FormatVersion = 1)
//	12      …         record 0: the logpb.Header
//	…       …         record 1, 2, …: logpb.Event with seq 1, 2, …
//
// and each record is
//
//	size      field
//	1–10      uvarint n, the payload length, minimally encoded, n ≤ MaxPayload (64 MiB)
//	n         payload: the marshaled protobuf message
//	4         CRC32C (Castagnoli) of the payload, uint32
//
// A record must also decode to at most MaxDecoded (256 MiB) of memory, as
// estimated from its wire format before decoding: a valid payload of empty
// repeated messages would otherwise decode to some 70 times its size.
//
// The file ends after a record; there is no trailer, so a log being
// written is readable up to its last flushed record, and a recording
// normally ends with an End event.
//
// # Why a CRC per record and a sequence number per event
//
// A log is only useful if a replay can trust it: a replay fed a damaged log
// diverges, and then the guest, not the log, looks guilty. Each kind of
// damage is caught by a different check, and the Reader reports it with
// the record number and byte offset (a *FormatError):
//
//   - corruption (flipped bits, a bad sector): the record's CRC32C does not
//     match, or its payload does not decode (ErrCorrupt). A CRC per record,
//     not per file, names the damaged record and lets everything before it
//     be used;
//   - truncation (a crash mid-write, a partial copy): the stream ends inside
//     the file header or a record (ErrTruncated). A cut exactly between two
//     records cannot be seen in the framing; it shows as a log without its
//     End event;
//   - reordering, loss or duplication (a bad concatenation, a copy tool that
//     lost a block, a recorder bug): every record is intact, so only the
//     content can tell. Event seqs must run 1, 2, 3, … and exits must never
//     go down (ErrSequence).
//
// The Writer enforces the same sequence rules on Append, so a recorder bug
// fails at recording time instead of producing a log that cannot replay.
//
// # Usage
//
// Recording:
//
//	w, err := logio.NewWriter(f, header) // writes magic, version, header
//	...
//	err = w.Append(&logpb.Event{Seq: seq, Exits: exits, Kind: ...}) // seq 1, 2, 3, …
//	...
//	err = w.Close() // flushes, and closes f
//
// Replaying:
//
//	r, err := logio.NewReader(f)
//	if err := logio.CompareHeaders(r.Header(), runningHeader); err != nil {
//		return err // lists every differing field
//	}
//	for {
//		ev, err := r.Next()
//		if err == io.EOF {
//			break // clean end
//		}
//		if err != nil {
//			return err // *FormatError: errors.Is(err, logio.ErrCorrupt), …
//		}
//		...
//	}
//
// The caller's duties:
//
//  1. Close (or Flush) the Writer: events are buffered.
//  2. Treat io.EOF from Next without an End event as a recording that was
//     cut short, not as a complete one.
//  3. Call CompareHeaders before replaying; the Reader checks the framing,
//     not whether the log fits the VM.
//
// Writer and Reader are not safe for concurrent use.
package logio
