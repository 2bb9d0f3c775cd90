package ft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ftkvm/ftkvm/logchannel"
)

// Pairing is open to anyone who can reach the primary's port, before any
// certificate is checked, so no stranger may hold it up: every connection
// gets its handshake (TLS and the channel's) on a goroutine of its own,
// within preAuthTimeout, and at most maxHandshakes run at once. A
// connection past the bound evicts the oldest one still in its handshake:
// a stranger who fills every slot with silent connections must then keep
// opening them faster than the real backup completes its handshake (a few
// round trips), instead of merely keeping them open.
const (
	preAuthTimeout = 5 * time.Second
	maxHandshakes  = 16
)

// handshake is one connection's handshake as the accept loop sees it.
type handshake struct {
	id     uint64
	conn   net.Conn
	sender *logchannel.Sender
	err    error
}

// acceptBackup waits for a backup with the same VM; nil if none came.
func (p *primary) acceptBackup(ctx context.Context, l net.Listener, wait time.Duration, hash [32]byte) *logchannel.Sender {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		actx, cancel = context.WithTimeout(ctx, wait)
	}
	defer cancel()
	p.log.Info(fmt.Sprintf("waiting for the backup to connect on %s (%s)", l.Addr(), p.cfg.security()))
	// Handshakes that lose the race, and the accept loop, end on their
	// own: finished tells them nobody is listening any more.
	finished := make(chan struct{})
	defer close(finished)
	conns := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			select {
			case conns <- c:
			case <-actx.Done():
				c.Close()
				close(conns)
				return
			case <-finished:
				c.Close()
				return
			}
		}
	}()
	defer l.Close()

	done := make(chan handshake)
	pending := map[uint64]context.CancelFunc{}
	var order []uint64 // pending, oldest first
	defer func() {
		for _, stop := range pending {
			stop()
		}
	}()
	forget := func(id uint64) {
		if stop, ok := pending[id]; ok {
			stop()
			delete(pending, id)
		}
		for len(order) > 0 && pending[order[0]] == nil {
			order = order[1:]
		}
	}
	var next uint64
	for {
		select {
		case <-actx.Done():
			return nil
		case c, ok := <-conns:
			if !ok {
				conns = nil // the listener failed: finish the handshakes under way
				if len(pending) == 0 {
					return nil
				}
				continue
			}
			if len(pending) >= maxHandshakes {
				p.log.Warn(fmt.Sprintf("%d connections in their handshake: dropping the oldest", len(pending)))
				forget(order[0])
			}
			next++
			hctx, stop := context.WithTimeout(actx, preAuthTimeout)
			pending[next] = stop
			order = append(order, next)
			go func(h handshake) {
				h.sender, h.err = logchannel.NewSender(hctx, h.conn, p.cfg.channel(hash))
				select {
				case done <- h:
				case <-finished:
					if h.sender != nil {
						h.sender.Close()
					} else {
						h.conn.Close()
					}
				}
			}(handshake{id: next, conn: c})
		case h := <-done:
			forget(h.id)
			if h.err == nil {
				p.log.Info(fmt.Sprintf("backup connected from %s (%s)", h.conn.RemoteAddr(), p.cfg.security()))
				return h.sender
			}
			h.conn.Close()
			switch {
			case errors.Is(h.err, logchannel.ErrConfigMismatch):
				p.log.Warn(fmt.Sprintf("REFUSED the backup at %s: %v (%v)", h.conn.RemoteAddr(), ErrConfigMismatch, h.err))
			case errors.Is(h.err, logchannel.ErrAuth):
				p.log.Warn(fmt.Sprintf("REFUSED a connection from %s: not authenticated as the pair's backup (TLS): %v", h.conn.RemoteAddr(), h.err))
			default:
				p.log.Warn(fmt.Sprintf("backup at %s failed the handshake: %v", h.conn.RemoteAddr(), h.err))
			}
			if conns == nil && len(pending) == 0 {
				return nil
			}
		}
	}
}
