package testbed

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"
)

// Markers the host's init prints on the serial console (see init.sh).
const (
	markError = "FTKVM-TESTBED-ERROR "
	markStart = "FTKVM-TESTBED-START"
	markExit  = "FTKVM-TESTBED-EXIT "
)

// console splits the emulated host's serial output into what the user
// asked for (the script's output, between START and EXIT) and what only
// matters when something fails (firmware and kernel messages before START,
// the power-off after EXIT, ERROR lines). It is an io.Writer fed by the
// goroutine reading QEMU's stdout; the accessors may be called from others.
type console struct {
	nonce string
	live  io.Writer // Options.Console; never nil

	mu      sync.Mutex
	partial []byte
	started bool
	exited  bool
	status  int
	errs    []string
	output  bytes.Buffer
	other   ring // everything that is not script output, for diagnostics
	onStart func()
}

func newConsole(nonce string, live io.Writer, onStart func()) *console {
	if live == nil {
		live = io.Discard
	}
	return &console{nonce: nonce, live: live, other: ring{max: 40}, onStart: onStart}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.line(string(c.partial[:i]), true)
		c.partial = c.partial[i+1:]
	}
	return len(p), nil
}

// flush handles a last line without a newline (QEMU's output ended).
func (c *console) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.line(string(c.partial), false)
		c.partial = nil
	}
}

func (c *console) line(l string, newline bool) {
	// The serial line discipline may turn \n into \r\n (init switches that
	// off, but not before its first lines).
	l = strings.TrimSuffix(l, "\r")
	switch {
	case !c.started:
		// Nothing before START comes from the script, so markers here are
		// the init's. The firmware's terminal escapes (reset, clear
		// screen) and text without a newline may precede them on the
		// same line.
		l = stripEscapes(l)
		if strings.HasPrefix(l, markError) {
			c.errs = append(c.errs, strings.TrimPrefix(l, markError))
		} else if strings.HasSuffix(l, markStart) {
			c.started = true
			if c.onStart != nil {
				c.onStart()
			}
			return
		}
		c.other.add(l)
	case !c.exited:
		// The script's last line may lack a newline: the marker then
		// follows its text on the same line.
		if i := strings.Index(l, markExit+c.nonce+" "); i >= 0 {
			if rc, err := strconv.Atoi(strings.TrimSpace(l[i+len(markExit)+len(c.nonce)+1:])); err == nil {
				c.emit(l[:i], false)
				c.exited, c.status = true, rc
				return
			}
		}
		c.emit(l, newline)
	default:
		c.other.add(l)
	}
}

func (c *console) emit(s string, newline bool) {
	if newline {
		s += "\n"
	}
	if s == "" {
		return
	}
	c.output.WriteString(s)
	_, _ = io.WriteString(c.live, s) // a failing Console must not stop the host
}

// state returns a consistent snapshot.
func (c *console) state() (started, exited bool, status int, errs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started, c.exited, c.status, append([]string(nil), c.errs...)
}

func (c *console) scriptOutput() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.output.String()
}

// diagnostics is the tail worth showing with an error: the script's last
// lines once it started, else the boot log.
func (c *console) diagnostics() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return tail(c.output.String(), 25)
	}
	return strings.Join(c.other.lines(), "\n")
}

// ring keeps the last max lines.
type ring struct {
	max int
	buf []string
}

func (r *ring) add(l string) {
	// Firmware output is full of terminal escapes and blank lines.
	l = stripEscapes(l)
	if strings.TrimSpace(l) == "" {
		return
	}
	r.buf = append(r.buf, l)
	if len(r.buf) > r.max {
		r.buf = r.buf[len(r.buf)-r.max:]
	}
}

func (r *ring) lines() []string { return r.buf }

// stripEscapes drops ANSI escape sequences (ESC [ ... final byte, and
// two-byte ones like ESC c) and other control characters but tabs.
func stripEscapes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == 0x1b {
			switch {
			case i+1 < len(s) && s[i+1] == '[': // CSI: up to a final byte
				i += 2
				for i < len(s) && !(s[i] >= '@' && s[i] <= '~') {
					i++
				}
			case i+1 < len(s): // a two-byte escape such as ESC c
				i++
			}
			continue
		}
		if ch < 0x20 && ch != '\t' {
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
