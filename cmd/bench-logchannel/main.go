// Command bench-logchannel measures the logchannel package on loopback TCP,
// side by side in one run, and prints a compact table:
//
//   - throughput of the channel against a raw TCP copy of the same bytes
//     (large entries, default 64 KiB), as a ratio;
//   - entries per second for 32-byte entries;
//   - ack latency (Append to acked) median and 99th percentile;
//   - compression ratio and cost of S2 and zstd on a log corpus.
//
// The compression figures come from a synthetic log-like corpus unless
// -log names a recorded one, in either of two formats, told apart by the
// first 8 bytes:
//
//   - an ftkvm event log as `ftvm record -o FILE` writes it (package
//     replay/logio; it starts with the magic "FTKVMLOG"): each event,
//     re-encoded with proto.Marshal, is one channel entry, as a recorder
//     streaming to a backup would send it; the header record is left out;
//   - otherwise, a sequence of entries, each an unsigned LEB128 varint
//     length (as encoding/binary.AppendUvarint writes it) followed by that
//     many bytes, with nothing before, between or after.
//
// Usage:
//
//	go run ./cmd/bench-logchannel [-rounds 5] [-large-mib 512] [-small 3000000] [-log FILE]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"time"

	"github.com/ftkvm/ftkvm/logchannel"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
)

var (
	rounds    = flag.Int("rounds", 5, "rounds of each throughput measurement (median reported)")
	largeMiB  = flag.Int("large-mib", 512, "MiB moved per large-entry round")
	largeSize = flag.Int("large-size", 64<<10, "large entry size in bytes")
	small     = flag.Int("small", 3_000_000, "32-byte entries per small-entry round")
	latN      = flag.Int("lat", 20000, "ack latency samples")
	logFile   = flag.String("log", "", "recorded log for the compression figures: an ftkvm event log (ftvm record -o), or uvarint length + bytes per entry")
	cpuProf   = flag.String("cpuprofile", "", "write a CPU profile to this file")
)

var cfgHash = [32]byte{0xbe, 0x7c}

func main() {
	flag.Parse()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-logchannel:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-logchannel:", err)
		os.Exit(1)
	}
}

func run() error {
	start := time.Now()
	fmt.Printf("logchannel benchmark, loopback TCP, both ends in this process, %d rounds, medians (GOMAXPROCS=%d)\n\n", *rounds, runtime.GOMAXPROCS(0))

	// Large entries: raw TCP and channel, interleaved round by round; the
	// ratios are medians of per-round ratios, which cancels most of the
	// drift a shared machine adds. The raw copy writes the entry size and,
	// like the channel's frames, 256 KiB at a time.
	total := int64(*largeMiB) << 20
	var raw, rawBig, ch, r64, r256 []float64
	for i := 0; i < *rounds; i++ {
		r, err := rawTCP(total, *largeSize)
		if err != nil {
			return fmt.Errorf("raw TCP: %w", err)
		}
		rb, err := rawTCP(total, logchannel.DefaultBatchBytes)
		if err != nil {
			return fmt.Errorf("raw TCP: %w", err)
		}
		c, err := channelThroughput(total, *largeSize, logchannel.CompressNone)
		if err != nil {
			return fmt.Errorf("channel: %w", err)
		}
		raw, rawBig, ch = append(raw, r), append(rawBig, rb), append(ch, c)
		r64, r256 = append(r64, c/r), append(r256, c/rb)
	}
	fmt.Printf("%-40s %12s %14s %14s\n", "measurement", "value", "vs raw 64 KiB", "vs raw 256 KiB")
	fmt.Printf("%-40s %7.0f MB/s\n", fmt.Sprintf("raw TCP copy, %d KiB writes", *largeSize>>10), median(raw)/1e6)
	fmt.Printf("%-40s %7.0f MB/s\n", fmt.Sprintf("raw TCP copy, %d KiB writes", logchannel.DefaultBatchBytes>>10), median(rawBig)/1e6)
	fmt.Printf("%-40s %7.0f MB/s %14.2f %14.2f\n", fmt.Sprintf("channel, %d KiB entries", *largeSize>>10), median(ch)/1e6, median(r64), median(r256))

	// Small entries.
	var eps []float64
	for i := 0; i < *rounds; i++ {
		e, err := smallEntries(*small, 32)
		if err != nil {
			return fmt.Errorf("small entries: %w", err)
		}
		eps = append(eps, e)
	}
	fmt.Printf("%-40s %8.2f M/s\n", "channel, 32-byte entries (entries/s)", median(eps)/1e6)

	// Ack latency.
	lat, err := ackLatency(*latN)
	if err != nil {
		return fmt.Errorf("ack latency: %w", err)
	}
	fmt.Printf("%-40s %9.1f µs\n", "ack latency, Append→acked, p50", us(lat[len(lat)/2]))
	fmt.Printf("%-40s %9.1f µs\n", "ack latency, Append→acked, p99", us(lat[len(lat)*99/100]))

	// Compression.
	entries, source, err := corpus()
	if err != nil {
		return err
	}
	if err := compression(entries, source); err != nil {
		return err
	}
	fmt.Printf("\ntotal time %v\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}

// tcpPair returns a connected loopback TCP pair.
func tcpPair() (net.Conn, net.Conn, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		return nil, nil, r.err
	}
	return a, r.c, nil
}

// rawTCP copies total bytes in writes of size and returns bytes/s.
func rawTCP(total int64, size int) (float64, error) {
	a, b, err := tcpPair()
	if err != nil {
		return 0, err
	}
	defer a.Close()
	defer b.Close()
	buf := make([]byte, size)
	rand.NewChaCha8([32]byte{}).Read(buf)
	errc := make(chan error, 1)
	t0 := time.Now()
	go func() {
		for n := int64(0); n < total; n += int64(size) {
			if _, err := a.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	rbuf := make([]byte, size)
	for n := int64(0); n < total; n += int64(size) {
		if _, err := io.ReadFull(b, rbuf); err != nil {
			return 0, err
		}
	}
	d := time.Since(t0)
	if err := <-errc; err != nil {
		return 0, err
	}
	return float64(total) / d.Seconds(), nil
}

func connect(cfg logchannel.Config) (*logchannel.Sender, *logchannel.Receiver, error) {
	a, b, err := tcpPair()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		r   *logchannel.Receiver
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := logchannel.NewReceiver(ctx, b, cfg)
		ch <- res{r, err}
	}()
	s, err := logchannel.NewSender(ctx, a, cfg)
	rr := <-ch
	if err != nil || rr.err != nil {
		return nil, nil, errors.Join(err, rr.err)
	}
	return s, rr.r, nil
}

func benchConfig(c logchannel.Compression) logchannel.Config {
	return logchannel.Config{ConfigHash: cfgHash, Compression: c, Timeout: 10 * time.Second}
}

// pump appends entries from next until it returns nil and drains them on
// the receiver; it returns the time until the last entry was received.
func pump(cfg logchannel.Config, n int, next func(i int) []byte) (time.Duration, int64, error) {
	s, r, err := connect(cfg)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	defer s.Close()
	ctx := context.Background()
	type res struct {
		bytes int64
		err   error
	}
	done := make(chan res, 1)
	t0 := time.Now()
	go func() {
		var total int64
		for i := 0; i < n; i++ {
			seq, e, err := r.Next(ctx)
			if err != nil {
				done <- res{total, err}
				return
			}
			total += int64(len(e))
			r.Consumed(seq) // done with the entry: its buffer may be reused
		}
		done <- res{total, nil}
	}()
	for i := 0; i < n; i++ {
		if _, err := s.Append(ctx, next(i)); err != nil {
			return 0, 0, err
		}
	}
	rr := <-done
	return time.Since(t0), rr.bytes, rr.err
}

func channelThroughput(total int64, size int, c logchannel.Compression) (float64, error) {
	buf := make([]byte, size)
	rand.NewChaCha8([32]byte{}).Read(buf)
	n := int(total / int64(size))
	d, bytes, err := pump(benchConfig(c), n, func(int) []byte { return buf })
	if err != nil {
		return 0, err
	}
	return float64(bytes) / d.Seconds(), nil
}

func smallEntries(n, size int) (float64, error) {
	buf := make([]byte, size)
	d, _, err := pump(benchConfig(logchannel.CompressNone), n, func(i int) []byte {
		binary.LittleEndian.PutUint64(buf, uint64(i))
		return buf
	})
	if err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}

// ackLatency appends one 32-byte entry at a time and waits for its ack.
func ackLatency(n int) ([]time.Duration, error) {
	s, r, err := connect(benchConfig(logchannel.CompressNone))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	defer s.Close()
	ctx := context.Background()
	go func() {
		for {
			if _, _, err := r.Next(ctx); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 32)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n+n/10; i++ {
		t0 := time.Now()
		seq, err := s.Append(ctx, buf)
		if err != nil {
			return nil, err
		}
		if err := s.WaitAcked(ctx, seq); err != nil {
			return nil, err
		}
		if i >= n/10 { // warm-up
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	return lat, nil
}

// corpus returns the entries for the compression figures.
func corpus() ([][]byte, string, error) {
	if *logFile == "" {
		return syntheticLog(200_000), "SYNTHETIC log-like corpus (no recorded Linux-boot log yet; use -log FILE)", nil
	}
	f, err := os.Open(*logFile)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	if magic, _ := br.Peek(len(logio.Magic)); string(magic) == logio.Magic {
		return eventLog(br)
	}
	var entries [][]byte
	for {
		n, err := binary.ReadUvarint(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: entry %d: length: %w", *logFile, len(entries)+1, err)
		}
		if n > 64<<20 {
			return nil, "", fmt.Errorf("%s: entry %d: length %d too large", *logFile, len(entries)+1, n)
		}
		e := make([]byte, n)
		if _, err := io.ReadFull(br, e); err != nil {
			return nil, "", fmt.Errorf("%s: entry %d: %w", *logFile, len(entries)+1, err)
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return nil, "", fmt.Errorf("%s: no entries", *logFile)
	}
	return entries, "recorded log " + *logFile, nil
}

// eventLog reads an ftkvm event log (replay/logio format) and returns each
// event's protobuf encoding as one entry.
func eventLog(r io.Reader) ([][]byte, string, error) {
	lr, err := logio.NewReader(r)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", *logFile, err)
	}
	var entries [][]byte
	ended := false
	for {
		ev, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", *logFile, err)
		}
		b, err := proto.Marshal(ev)
		if err != nil {
			return nil, "", fmt.Errorf("%s: event %d: %w", *logFile, ev.GetSeq(), err)
		}
		entries = append(entries, b)
		ended = ev.GetEnd() != nil
	}
	if len(entries) == 0 {
		return nil, "", fmt.Errorf("%s: no events", *logFile)
	}
	src := fmt.Sprintf("ftkvm event log %s (%d bytes on disk, one entry per event)", *logFile, lr.Offset())
	if !ended {
		src += ", WITHOUT an End event (recording cut short)"
	}
	return entries, src, nil
}

// syntheticLog imitates a replay log: mostly small protobuf-like event
// records (exit landmarks, PIO reads, rdtsc values), some register
// snapshots at interrupt landmarks, and a few 4 KiB disk-read blocks.
func syntheticLog(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var exits, tsc uint64 = 0, 1 << 32
	rip := uint64(0xffffffff81000000)
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		exits += 1 + uint64(rng.IntN(40))
		tsc += 1000 + uint64(rng.IntN(5000))
		var b []byte
		switch k := rng.IntN(100); {
		case k < 55: // PIO/MMIO read value
			b = binary.AppendUvarint(b, 1<<3)
			b = binary.AppendUvarint(b, exits)
			b = append(b, 0x10)
			b = binary.AppendUvarint(b, []uint64{0x40, 0x42, 0x43, 0x61, 0x3f8, 0x3fd, 0x71}[rng.IntN(7)])
			b = append(b, 0x18)
			b = binary.AppendUvarint(b, uint64(rng.IntN(256)))
		case k < 85: // rdtsc value
			b = binary.AppendUvarint(b, 2<<3)
			b = binary.AppendUvarint(b, exits)
			b = append(b, 0x10)
			b = binary.AppendUvarint(b, tsc)
		case k < 99: // interrupt at an async landmark: RIP, registers, page hash
			b = binary.AppendUvarint(b, 3<<3)
			b = binary.AppendUvarint(b, exits)
			rip += uint64(rng.IntN(4096)) - 2048
			b = binary.LittleEndian.AppendUint64(b, rip)
			for r := 0; r < 16; r++ {
				v := []uint64{0, 1, rip, 0xffff888000000000 + uint64(rng.IntN(1<<20))*8, uint64(rng.IntN(100))}[rng.IntN(5)]
				b = binary.AppendUvarint(b, v)
			}
			b = binary.LittleEndian.AppendUint64(b, rng.Uint64()) // dirty-page hash
			b = append(b, byte(rng.IntN(16)))                     // irq
		default: // disk read data: half text-like, half random
			b = binary.AppendUvarint(b, 4<<3)
			b = binary.AppendUvarint(b, exits)
			blk := make([]byte, 4096)
			if rng.IntN(2) == 0 {
				words := []string{"init", "console", "ttyS0", "busybox", "mount", "proc", "sys", "\n", " ", "/bin/sh", "echo", "0000"}
				var w bytes.Buffer
				for w.Len() < len(blk) {
					w.WriteString(words[rng.IntN(len(words))])
				}
				copy(blk, w.Bytes())
			} else {
				for j := range blk {
					blk[j] = byte(rng.Uint32())
				}
			}
			b = append(b, blk...)
		}
		out = append(out, b)
	}
	return out
}

// compression prints the ratio and speed of each codec on the corpus cut
// into 256 KiB frames, as the sender does, and the channel's throughput
// with and without S2 on the same entries.
func compression(entries [][]byte, source string) error {
	var frames [][]byte
	var cur []byte
	var total int
	for _, e := range entries {
		if len(cur)+len(e)+5 > logchannel.DefaultBatchBytes && len(cur) > 0 {
			frames = append(frames, cur)
			cur = nil
		}
		cur = binary.AppendUvarint(cur, uint64(len(e)))
		cur = append(cur, e...)
	}
	frames = append(frames, cur)
	for _, f := range frames {
		total += len(f) // entries with their uvarint length prefixes
	}
	// A recorded log may be small (a Linux boot is a few hundred KiB), so
	// the timings repeat the corpus until about corpusPassBytes have been
	// processed; the ratio is the same for every pass.
	const corpusPassBytes = 32 << 20
	passes := max(1, (corpusPassBytes+total-1)/total)
	fmt.Printf("\ncompression on the %s:\n%d entries (mean %.0f bytes), %.2f MiB, %d frames of <= %d KiB; timings over %d passes\n",
		source, len(entries), float64(total-len(entries))/float64(len(entries)), float64(total)/(1<<20),
		len(frames), logchannel.DefaultBatchBytes>>10, passes)
	fmt.Printf("%-30s %8s %14s %14s %14s\n", "codec", "ratio", "compress", "decompress", "compress/entry")

	zf, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	zd, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	type codec struct {
		name string
		enc  func(dst, src []byte) []byte
		dec  func(dst, src []byte) ([]byte, error)
	}
	codecs := []codec{
		{"s2 (used by CompressS2)", s2.Encode, s2.Decode},
		{"s2 better", s2.EncodeBetter, s2.Decode},
		{"zstd fastest", func(d, s []byte) []byte { return zf.EncodeAll(s, d[:0]) }, func(d, s []byte) ([]byte, error) { return dec.DecodeAll(s, d[:0]) }},
		{"zstd default", func(d, s []byte) []byte { return zd.EncodeAll(s, d[:0]) }, func(d, s []byte) ([]byte, error) { return dec.DecodeAll(s, d[:0]) }},
	}
	for _, c := range codecs {
		var in, out int
		var dst, back []byte
		var tc, td time.Duration
		for p := 0; p < passes; p++ {
			for _, f := range frames {
				t0 := time.Now()
				dst = c.enc(dst[:cap(dst)], f)
				tc += time.Since(t0)
				t0 = time.Now()
				var err error
				back, err = c.dec(back[:cap(back)], dst)
				td += time.Since(t0)
				if err != nil || !bytes.Equal(back, f) {
					return fmt.Errorf("%s: round trip failed: %v", c.name, err)
				}
				in += len(f)
				out += len(dst)
			}
		}
		fmt.Printf("%-30s %8.2f %9.0f MB/s %9.0f MB/s %11.0f ns\n", c.name, float64(in)/float64(out),
			float64(in)/tc.Seconds()/1e6, float64(in)/td.Seconds()/1e6,
			float64(tc)/float64(passes*len(entries)))
	}
	for _, c := range []logchannel.Compression{logchannel.CompressNone, logchannel.CompressS2} {
		var ds []float64
		for i := 0; i < *rounds; i++ {
			d, bytes, err := pump(benchConfig(c), passes*len(entries), func(i int) []byte { return entries[i%len(entries)] })
			if err != nil {
				return err
			}
			ds = append(ds, float64(bytes)/d.Seconds())
		}
		fmt.Printf("%-30s %8s %9.0f MB/s (end to end over loopback)\n", "channel, compression "+c.String(), "", median(ds)/1e6)
	}
	return nil
}
