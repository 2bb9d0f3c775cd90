package guestcheck

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveOne accepts one TCP connection on the loopback and hands it to h; it
// returns a connection to it from the client side.
func serveOne(t *testing.T, h func(c *net.TCPConn)) *net.TCPConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer c.Close()
		h(c.(*net.TCPConn))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.(*net.TCPConn)
}

// lineServer answers each request line (numbered from 1) with what f writes,
// flushing whenever it has no input left; f returning false ends the
// connection at once. At the end of stream it writes tail and closes.
func lineServer(f func(n int, line []byte, w *bufio.Writer) bool, tail string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		r, w := bufio.NewReader(c), bufio.NewWriter(c)
		for n := 1; ; n++ {
			line, err := r.ReadBytes('\n')
			if err != nil {
				break
			}
			if !f(n, line, w) {
				// End the stream with a FIN, never a reset: closing with
				// unread input would make the kernel send RST, and the
				// client would see a reset instead of the early end.
				w.Flush()
				c.CloseWrite()
				io.Copy(io.Discard, c)
				return
			}
			if r.Buffered() == 0 {
				w.Flush()
			}
		}
		w.WriteString(tail)
		w.Flush()
	}
}

func echoAll(n int, line []byte, w *bufio.Writer) bool {
	w.Write(line)
	return true
}

func TestEchoCheckGoodServer(t *testing.T) {
	c := serveOne(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	calls, last := 0, 0
	st, err := EchoCheck(context.Background(), c, 10000, 100, func(n int) { calls++; last = n })
	if err != nil {
		t.Fatal(err)
	}
	if st.Lines != 10000 || st.Bytes != 10000*int64(len(EchoLine(1))) || calls != 10000 || last != 10000 {
		t.Errorf("stats %+v, progress called %d times, last %d", st, calls, last)
	}
	if st.Duration <= 0 || st.MaxRTT <= 0 || st.MaxRTT > st.Duration {
		t.Errorf("implausible times: %+v", st)
	}
	t.Logf("%+v", st)
}

func TestEchoCheckZeroLines(t *testing.T) {
	c := serveOne(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	if _, err := EchoCheck(context.Background(), c, 0, 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := EchoCheck(context.Background(), c, 1, 0, nil); err == nil {
		t.Fatal("window 0 accepted")
	}
}

// The server holds its replies until the client stops sending: it never sees
// more than window unanswered lines, and does see that many (pipelining).
func TestEchoCheckWindow(t *testing.T) {
	const window = 40
	maxPending := make(chan int, 1)
	c := serveOne(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		var pending []byte
		most := 0
		defer func() { maxPending <- most }()
		for {
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			line, err := r.ReadBytes('\n')
			pending = append(pending, line...)
			var ne net.Error
			switch {
			case err == nil:
				most = max(most, strings.Count(string(pending), "\n"))
			case errors.As(err, &ne) && ne.Timeout():
				c.Write(pending)
				pending = pending[:0]
			default:
				c.Write(pending)
				c.CloseWrite()
				return
			}
		}
	})
	if _, err := EchoCheck(context.Background(), c, 300, window, nil); err != nil {
		t.Fatal(err)
	}
	if most := <-maxPending; most != window {
		t.Errorf("the server saw up to %d unanswered lines, want exactly the window %d", most, window)
	}
}

// Each faulty server must be caught, with the first bad line named.
func TestEchoCheckCatchesFaults(t *testing.T) {
	const k = 500
	cases := []struct {
		name string
		f    func(n int, line []byte, w *bufio.Writer) bool
		tail string
		want string
	}{
		{"duplicate", func(n int, line []byte, w *bufio.Writer) bool {
			w.Write(line)
			if n == k {
				w.Write(line)
			}
			return true
		}, "", "line 501: got line 500 again"},
		{"drop", func(n int, line []byte, w *bufio.Writer) bool {
			if n != k {
				w.Write(line)
			}
			return true
		}, "", "line 500: missing: got line 501 in its place"},
		{"alter", func(n int, line []byte, w *bufio.Writer) bool {
			if n == k {
				line[3] = 'x'
			}
			w.Write(line)
			return true
		}, "", `line 500: reply "000x00 ftkvm\n" differs from the request "000500 ftkvm\n"`},
		{"reorder", func() func(int, []byte, *bufio.Writer) bool {
			var held []byte
			return func(n int, line []byte, w *bufio.Writer) bool {
				switch n {
				case k:
					held = line
				case k + 1:
					w.Write(line)
					w.Write(held)
				default:
					w.Write(line)
				}
				return true
			}
		}(), "", "line 500: missing: got line 501 in its place"},
		{"close early", func(n int, line []byte, w *bufio.Writer) bool {
			if n == k {
				return false
			}
			w.Write(line)
			return true
		}, "", "line 500: end of stream after 499 of 2000 replies"},
		{"truncate", func(n int, line []byte, w *bufio.Writer) bool {
			if n == k {
				w.Write(line[:4])
				return false
			}
			w.Write(line)
			return true
		}, "", `line 500: end of stream in the middle of the reply (got "0005"`},
		{"extra at the end", echoAll, "junk\n", `unexpected data after the last reply (line 2000): "junk\n"`},
		{"duplicated last line", func(n int, line []byte, w *bufio.Writer) bool {
			w.Write(line)
			if n == 2000 {
				w.Write(line)
			}
			return true
		}, "", `unexpected data after the last reply (line 2000): "002000 ftkvm\n"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := serveOne(t, lineServer(tc.f, tc.tail))
			_, err := EchoCheck(context.Background(), c, 2000, 64, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestEchoCheckReset(t *testing.T) {
	c := serveOne(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		for n := 1; n < 300; n++ {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			c.Write(line)
		}
		c.SetLinger(0) // close with a reset
	})
	_, err := EchoCheck(context.Background(), c, 2000, 64, nil)
	if err == nil || !strings.Contains(err.Error(), "line") || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("got error %v, want one naming a line and the reset", err)
	}
	t.Log(err)
}

func TestEchoCheckContext(t *testing.T) {
	c := serveOne(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }) // never answers
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := EchoCheck(ctx, c, 100, 10, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a context.DeadlineExceeded", err)
	}
}

// The guest's echo server itself, busybox `nc -l -p PORT -e cat`, run on
// the host: every line comes back and nc exits 0 once the client is done.
func TestEchoCheckBusyboxNc(t *testing.T) {
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("no /bin/busybox (Debian package busybox-static)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(busybox, "nc", "-l", "-p", strconv.Itoa(port), "-e", "cat")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nc never listened on port %d: %v", port, err)
		}
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := EchoCheck(ctx, c, 10000, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("nc: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nc still running after the client closed its side")
	}
}
