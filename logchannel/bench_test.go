package logchannel

import (
	"context"
	"io"
	"testing"
)

// benchStream measures the channel over loopback TCP with entries of size.
func benchStream(b *testing.B, size int, cfg Config) {
	a, c := tcpPair(b)
	s, r := mustConnect(b, a, c, cfg, cfg)
	ctx := context.Background()
	buf := make([]byte, size)
	done := make(chan error, 1)
	b.SetBytes(int64(size))
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			seq, _, err := r.Next(ctx)
			if err != nil {
				done <- err
				return
			}
			r.Consumed(seq)
		}
		done <- nil
	}()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkChannel32(b *testing.B)  { benchStream(b, 32, testConfig()) }
func BenchmarkChannel64K(b *testing.B) { benchStream(b, 64<<10, testConfig()) }

// BenchmarkRawTCP64K is the baseline for BenchmarkChannel64K.
func BenchmarkRawTCP64K(b *testing.B) {
	a, c := tcpPair(b)
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			a.Write(buf)
		}
	}()
	rbuf := make([]byte, len(buf))
	for i := 0; i < b.N; i++ {
		if _, err := io.ReadFull(c, rbuf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAckLatency(b *testing.B) {
	a, c := tcpPair(b)
	s, r := mustConnect(b, a, c, testConfig(), testConfig())
	ctx := context.Background()
	go func() {
		for {
			if _, _, err := r.Next(ctx); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq, err := s.Append(ctx, buf)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.WaitAcked(ctx, seq); err != nil {
			b.Fatal(err)
		}
	}
}
