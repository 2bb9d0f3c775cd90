package net

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/bounce"
)

// openTestTap creates a tap "ftkvmtestN", brings it up, and returns it
// with a raw AF_PACKET socket bound to it (the host's side of the
// interface). Both go away at the end of the test. It skips where a tap
// cannot be made: not root, no /dev/net/tun, or no CAP_NET_ADMIN.
func openTestTap(t *testing.T) (*Tap, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a tap interface")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	tap, err := OpenTap("ftkvmtest%d")
	if errors.Is(err, unix.EPERM) {
		t.Skipf("cannot create a tap (no CAP_NET_ADMIN here?): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Close() })
	// Quiet the host's IPv6 chatter (router solicitations) on it, if IPv6
	// is there at all; the test filters frames anyway.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+tap.Name()+"/disable_ipv6", []byte("1"), 0)

	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(tap.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCGIFFLAGS: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("bringing %s up (SIOCSIFFLAGS): %v", tap.Name(), err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr); err != nil {
		t.Fatalf("SIOCGIFINDEX: %v", err)
	}
	index := int(ifr.Uint32())

	proto := int(htons(unix.ETH_P_ALL))
	p, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(p) })
	if err := unix.Bind(p, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: index}); err != nil {
		t.Fatalf("binding the packet socket to %s: %v", tap.Name(), err)
	}
	tv := unix.Timeval{Sec: 0, Usec: 100000}
	if err := unix.SetsockoptTimeval(p, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return tap, p
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// A frame the host sends out of the tap comes out of a read; a frame
// written in is received by the host on the interface.
func TestTapCarriesFramesBothWays(t *testing.T) {
	tap, p := openTestTap(t)
	toGuest := frame(100, 0x11)
	toHost := frame(120, 0x22)

	got := make(chan []byte, 1)
	go func() {
		for { // skip the host's own frames until ours
			batch, err := tap.Serve(receiveRequest(1, RxBatchMax))
			if err != nil {
				close(got)
				return
			}
			for len(batch) > 0 {
				f, rest, ok := nextFrame(batch)
				if !ok {
					break
				}
				if bytes.Equal(f, toGuest) {
					got <- f
					return
				}
				batch = rest
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for sent := false; !sent; {
		if _, err := unix.Write(p, toGuest); err != nil {
			t.Fatalf("sending on the packet socket: %v", err)
		}
		select {
		case _, ok := <-got:
			if !ok {
				t.Fatal("the tap read failed")
			}
			sent = true
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("the host's frame never came out of the tap")
			}
		}
	}

	if _, err := tap.Serve(bounce.Request{Tag: 2, Len: len(toHost), Write: true, Data: toHost}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the frame written into the tap never reached the host")
		}
		n, _, err := unix.Recvfrom(p, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(buf[:n], toHost) {
			break
		}
	}
}

// Close unblocks a read waiting for a frame.
func TestTapCloseUnblocksServe(t *testing.T) {
	tap, _ := openTestTap(t)
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := tap.Serve(receiveRequest(1, 1)); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	tap.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Serve returned %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still blocked after Close")
	}
}

func TestOpenTapRefusesBadNames(t *testing.T) {
	if _, err := OpenTap("a-name-longer-than-ifnamsiz"); err == nil {
		t.Error("a 27-byte interface name accepted")
	}
}
