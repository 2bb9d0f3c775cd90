// Package logchannel is the logging channel between an FT primary and its
// backup: a flow-controlled, acknowledged, heartbeated stream of opaque log
// entries over any net.Conn (TCP by default, TLS 1.3 with mutual
// certificate authentication as an option, NewPipe in memory for tests).
//
// The primary's Sender numbers entries from 1, batches entries appended
// close together into CRC32C-checked frames, and keeps every entry until
// the backup acknowledges it; that retention is the window, so Append
// blocks when the backup falls behind and memory stays bounded. The
// backup's Receiver buffers frames, acknowledges cumulatively, and hands
// entries out in order with Next. Sender.WaitAcked is the output-commit
// primitive: an output produced after entry N may leave the primary once
// WaitAcked(N) returns. Both sides send heartbeats when idle and report a
// Failure when the peer falls silent past a timeout, with the sequence
// numbers go-live needs; a new connection resumes the stream where the
// backup's buffer ends, without loss or duplication.
//
// The entries are opaque here; the replay package defines their schema.
//
// The package follows the house split between a pure core and thin
// goroutines: frame.go and handshake.go encode and check the wire format,
// senderCore and receiverCore hold the window, retention, sequence and ack
// bookkeeping, and livenessCheck the heartbeat rule, all without IO,
// goroutines or clocks; Sender and Receiver wrap them with a writer, a
// reader and a ticker goroutine per connection.
//
// # Usage
//
//	// Backup.
//	r, err := logchannel.Accept(ctx, listener, cfg)
//	for {
//		seq, entry, err := r.Next(ctx)
//		if err != nil { break } // io.EOF: orderly end; ErrDisconnected: see below
//		replay(entry)
//		r.Consumed(seq)
//	}
//
//	// Primary.
//	s, err := logchannel.Dial(ctx, "tcp", backupAddr, cfg)
//	seq, err := s.Append(ctx, entry)       // at each nondeterministic event
//	err = s.WaitAcked(ctx, seq)            // before releasing an output after it
//	...
//	s.Flush(ctx); s.Close()
//
// The caller's duties:
//
//  1. Give both sides the same Config.ConfigHash: a hash of everything the
//     two VMs must agree on (CPUID table, memory size, devices, kernel).
//     The handshake refuses a mismatch, and any protocol version mismatch.
//  2. Primary: Append every log entry in order, from one goroutine or
//     under the caller's own ordering. Release an output produced after
//     entry N only once WaitAcked(N) returned nil (or Acked() >= N); wait
//     from the output's goroutine, never from the one that appends.
//  3. Backup: call Next from one goroutine and Consumed(seq) once done
//     with an entry. In AckConsumed mode Consumed is what gets acked; in
//     both modes it lets the receiver reuse the entry's memory, so copy
//     what you keep past it.
//  4. Watch Failed on both sides. A Failure says the connection is gone
//     and where the stream stood (LastAcked, LastReceived...). Either
//     resume with a new connection (Sender.Resume after re-dialing,
//     Receiver.Resume on the newly accepted one), or go live: the backup
//     drains Next until it returns ErrDisconnected, which means every
//     received entry was delivered, and then runs the shared-storage
//     test-and-set; a primary that wins goes on alone and Closes its
//     Sender. Append and WaitAcked keep waiting across a failure, so
//     Close (or ctx) is what releases them.
//  5. Keep Timeout well above the peer's HeartbeatInterval (the handshake
//     refuses a peer whose interval exceeds half the timeout) and above
//     the longest pause either process may take. A side's own pauses
//     (its liveness ticks coming late: its process or its whole host did
//     not run) do not count against the peer, up to one Timeout per
//     silence, so a host that stalls both sides of a pair raises no
//     alarm; a pause of the peer's host alone still does.
//  6. For TLS, give the sender a client certificate, RootCAs and
//     ServerName, and the receiver a server certificate and ClientCAs.
//     The sender is always the TLS client. A config that would let a peer
//     in unverified (InsecureSkipVerify, no RootCAs or ClientCAs, a
//     ClientAuth weaker than RequireAndVerifyClientCert, a
//     GetConfigForClient that returns such a config) is refused with
//     ErrInvalidConfig, and after the handshake each side requires a
//     certificate chain from its peer verified against those CAs
//     (ErrAuth otherwise). Without TLS the channel is plaintext and
//     unauthenticated: use that only on a link nobody else can reach.
//  7. Close both sides when done; Flush first on the sender if the
//     receiver must have everything.
//
// # Protocol
//
// Every frame is a 32-byte little-endian header and a payload.
//
//	offset size field
//	0      1    magic 0xF7
//	1      1    protocol version (1)
//	2      1    type: 1 hello, 2 welcome, 3 reject, 4 data, 5 ack, 6 heartbeat, 7 close
//	3      1    flags: bits 0-1 payload codec (0 none, 1 S2), data frames only; others zero
//	4      4    payload length on the wire
//	8      4    payload length after decompression
//	12     4    entry count (data frames)
//	16     8    seq: data: first entry; ack, heartbeat: cumulative ack (receiver)
//	            or last seq sent (sender); close: last seq
//	24     4    CRC32C of the uncompressed payload
//	28     4    CRC32C of bytes 0-27
//
// A data payload is count entries, each an unsigned varint length and the
// bytes. Handshake: after TLS, if any, the sender sends hello (VM config
// hash, a random stream id, the lowest seq it still holds, the last seq
// appended, its largest frame, its heartbeat interval); the receiver
// answers welcome (the last seq it has buffered, its ack, its heartbeat
// interval) or reject (a reason code and message) and closes. The sender
// resumes right after the receiver's last buffered seq. Handshake frames
// keep this header layout in every version, so a version mismatch is
// always recognised and reported.
//
// Flow control: the sender keeps at most WindowBytes (its buffers counted
// at their capacity, plus a per-frame overhead) and WindowEntries of
// unacknowledged entries, and one more frame buffer to recycle; Append
// blocks beyond that. The receiver buffers at most WindowBytes (plus one
// frame) and stops reading the connection while a frame does not fit, so
// TCP back-pressure reaches the sender.
// Acks are cumulative, sent after a frame is buffered (AckBuffered) or
// after Consumed (AckConsumed); window space is freed a frame at a time.
// Heartbeats go both ways when a side has sent nothing for
// HeartbeatInterval; a side that receives nothing for Timeout (not counting
// time the receiver spends with a full buffer) fails the connection.
//
// Errors: a bad magic, header or payload CRC, flag, length, entry encoding
// or decompression is ErrCorrupt; a stream that ends inside a frame is
// ErrTruncated; a data frame that does not start right after the last one
// is ErrSequence, as is an ack beyond what was sent or going backwards;
// version, config hash, TLS, and handshake problems are ErrVersion,
// ErrConfigMismatch, ErrAuth and ErrHandshake; a TLS config that would
// skip verifying the peer is ErrInvalidConfig. Each ends the connection
// and is reported (never skipped); none panics. PROTOCOL.md has the same
// description.
//
// # Choices
//
// The handshake is hand-encoded like the frame header rather than
// protobuf: three fixed-layout messages read once per connection, governed
// by the version byte, one codec and one fuzz target for the whole wire
// format, no generated code. Compression is S2 (klauspost/compress), chosen
// per frame: on the benchmark's log-like data it compresses at several
// hundred MB/s with a ratio close to zstd's fastest level at two to three
// times its speed; on loopback it costs more than it saves, so it is off by
// default and meant for links slower than the compressor.
package logchannel
