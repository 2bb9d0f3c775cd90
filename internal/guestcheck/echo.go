// Package guestcheck holds the host side of the example guest's device
// workloads (guest/initramfs): EchoCheck drives the TCP echo server of
// ftkvm.work=net and checks every reply; ParseDisk, ExpectedDisk and
// CheckImage check what ftkvm.work=disk printed and left on its ext2 image.
package guestcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Marker lines of the network workload (guest/initramfs/net.sh).
const (
	// MarkerNetUp starts "FTKVM-GUEST: net up A.B.C.D/NN port P", printed
	// once the echo server listens.
	MarkerNetUp = "FTKVM-GUEST: net up "
	// MarkerEchoDone: the connection ended and the server exited cleanly.
	MarkerEchoDone = "FTKVM-GUEST: echo done"
	// MarkerEchoFailed starts "FTKVM-GUEST: echo failed exit N": the server
	// exited with status N (e.g. after a reset).
	MarkerEchoFailed = "FTKVM-GUEST: echo failed"
	// MarkerNetFailed starts "FTKVM-GUEST: net failed <what>": no eth0, a
	// bad ftkvm.ip= or ftkvm.port=, or the server did not listen.
	MarkerNetFailed = "FTKVM-GUEST: net failed"
)

// EchoLine is request line n (numbered from 1), as EchoCheck sends it.
func EchoLine(n int) string { return fmt.Sprintf("%06d ftkvm\n", n) }

// EchoStats describes a successful EchoCheck.
type EchoStats struct {
	Lines    int           // request lines sent, each answered once
	Bytes    int64         // bytes sent (and received)
	Duration time.Duration // from the first send to the last reply
	MaxRTT   time.Duration // longest time from sending a line to its reply
}

// EchoCheck sends lines numbered request lines (EchoLine) on conn with at
// most window of them unanswered, and checks that each reply arrives
// exactly once, in order and byte-identical to its request. Requests go out
// in batches (half a window once half a window is free) so that a server
// sees few, large segments rather than one per line.
//
// After the last reply it half-closes conn (CloseWrite, when conn has it:
// a *net.TCPConn does), which ends an echo server such as `nc -l -e cat`,
// and waits for the server's end of stream; data after the last reply is an
// error (a duplicated last line, say). The caller still closes conn; after
// an error its deadline is in the past.
//
// progress, if not nil, is called after each verified reply with the
// number verified so far. The error names the first bad line: missing,
// duplicated, reordered, altered, truncated, or lost to an early end of
// stream, a reset or ctx.
func EchoCheck(ctx context.Context, conn net.Conn, lines, window int, progress func(n int)) (EchoStats, error) {
	if lines < 0 || window < 1 {
		return EchoStats{}, fmt.Errorf("echo check: need lines >= 0 and window >= 1 (got %d, %d)", lines, window)
	}
	e := &echo{
		conn:   conn,
		lines:  lines,
		window: window,
		base:   time.Now(),
		sentAt: make([]atomic.Int64, lines+1),
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
	}
	stopWatch := context.AfterFunc(ctx, func() { e.fail(fmt.Errorf("echo check: %w", ctx.Err())) })

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.send()
	}()
	stats, err := e.receive(progress)
	if err != nil {
		e.fail(err)
	}
	close(e.quit)
	wg.Wait()
	stopWatch()
	if err := e.firstErr(); err != nil {
		return EchoStats{}, err
	}
	return stats, nil
}

// echo is the state EchoCheck's sender and receiver share.
type echo struct {
	conn          net.Conn
	lines, window int
	base          time.Time
	sentAt        []atomic.Int64 // by line number: time.Since(base) just before it was sent
	answered      atomic.Int64   // replies verified
	wake          chan struct{}  // a reply was verified
	quit          chan struct{}  // closed when the receiver is done

	mu  sync.Mutex
	err error // first failure, of either side
}

// fail records err if it is the first failure and unblocks both sides.
func (e *echo) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
		e.conn.SetDeadline(time.Unix(1, 0)) // a time long past: pending I/O returns at once
	}
}

func (e *echo) firstErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// send writes the requests, a batch whenever enough of the window is free.
func (e *echo) send() {
	batch := max(e.window/2, 1)
	var buf []byte
	for sent := 0; sent < e.lines; {
		free := e.window - (sent - int(e.answered.Load()))
		if free < min(batch, e.lines-sent) {
			select {
			case <-e.wake:
				continue
			case <-e.quit:
				return
			}
		}
		n := min(free, e.lines-sent)
		buf = buf[:0]
		for i := sent + 1; i <= sent+n; i++ {
			buf = append(buf, EchoLine(i)...)
		}
		now := int64(time.Since(e.base))
		for i := sent + 1; i <= sent+n; i++ {
			e.sentAt[i].Store(now)
		}
		if _, err := e.conn.Write(buf); err != nil {
			e.fail(fmt.Errorf("echo check: sending lines %d-%d: %w", sent+1, sent+n, err))
			return
		}
		sent += n
	}
}

// receive reads and checks the replies, then the end of stream.
func (e *echo) receive(progress func(int)) (EchoStats, error) {
	var st EchoStats
	r := bufio.NewReaderSize(e.conn, 64<<10)
	for i := 1; i <= e.lines; i++ {
		got, err := r.ReadSlice('\n')
		if err != nil {
			return st, e.readError(i, got, err)
		}
		now := time.Since(e.base)
		if string(got) != EchoLine(i) {
			return st, fmt.Errorf("echo check: line %d: %s", i, describeReply(i, got))
		}
		st.MaxRTT = max(st.MaxRTT, now-time.Duration(e.sentAt[i].Load()))
		st.Duration = now - time.Duration(e.sentAt[1].Load())
		st.Bytes += int64(len(got))
		e.answered.Store(int64(i))
		select {
		case e.wake <- struct{}{}:
		default:
		}
		if progress != nil {
			progress(i)
		}
	}
	st.Lines = e.lines

	cw, ok := e.conn.(interface{ CloseWrite() error })
	if !ok {
		return st, nil
	}
	if err := cw.CloseWrite(); err != nil {
		return st, fmt.Errorf("echo check: half-closing after the last request: %w", err)
	}
	extra, err := io.ReadAll(io.LimitReader(r, 256))
	switch {
	case len(extra) > 0:
		return st, fmt.Errorf("echo check: unexpected data after the last reply (line %d): %q", e.lines, extra)
	case err != nil:
		return st, fmt.Errorf("echo check: waiting for the end of stream after the last reply: %w", err)
	}
	return st, nil
}

// readError explains a failed read of reply i (partial holds what was read).
func (e *echo) readError(i int, partial []byte, err error) error {
	if ferr := e.firstErr(); ferr != nil {
		return ferr // the sender failed or ctx ended: that is the cause
	}
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return fmt.Errorf("echo check: line %d: reply of more than %d bytes without a newline: %q...", i, len(partial), partial[:min(len(partial), 40)])
	case errors.Is(err, io.EOF) && len(partial) > 0:
		return fmt.Errorf("echo check: line %d: end of stream in the middle of the reply (got %q, want %q)", i, partial, EchoLine(i))
	case errors.Is(err, io.EOF):
		return fmt.Errorf("echo check: line %d: end of stream after %d of %d replies", i, i-1, e.lines)
	}
	return fmt.Errorf("echo check: line %d: reading the reply after %d of %d: %w", i, i-1, e.lines, err)
}

// describeReply says how reply got, received where line i was due, is wrong.
func describeReply(i int, got []byte) string {
	if j, ok := parseEchoLine(got); ok {
		switch {
		case j < i:
			return fmt.Sprintf("got line %d again (duplicated or reordered reply)", j)
		case j > i:
			return fmt.Sprintf("missing: got line %d in its place (dropped or reordered reply)", j)
		}
	}
	return fmt.Sprintf("reply %q differs from the request %q", got, EchoLine(i))
}

// parseEchoLine returns n if b is exactly EchoLine(n).
func parseEchoLine(b []byte) (int, bool) {
	digits, ok := bytes.CutSuffix(b, []byte(" ftkvm\n"))
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil || n < 1 || EchoLine(n) != string(b) {
		return 0, false
	}
	return n, true
}
