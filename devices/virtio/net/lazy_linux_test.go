package net

import (
	"errors"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
)

func TestParseBackend(t *testing.T) {
	for spec, want := range map[string]string{
		"tap:":             "want tap:NAME",
		"vde:sw":           "want tap:NAME or udp:LOCAL[,PEER]",
		"udp:":             "LOCAL is empty",
		"udp:127.0.0.1:1,": "PEER is empty",
		"udp:nohost":       `LOCAL "nohost"`,
	} {
		if _, err := ParseBackend(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", spec, err, want)
		}
	}
	l, err := ParseBackend("udp::7000")
	if err != nil || l.String() != "udp [::]:7000" {
		t.Errorf("udp::7000: %v, %v (every interface)", l, err)
	}
	cfg, err := ParseUDP("127.0.0.1:7000,127.0.0.1:7001")
	if err != nil || cfg.Peer.Port() != 7001 || cfg.Local.Port() != 7000 {
		t.Errorf("ParseUDP: %+v, %v", cfg, err)
	}
}

type fakeBackend struct{ served, closed int }

func (f *fakeBackend) Serve(req bounce.Request) ([]byte, error) { f.served++; return nil, nil }
func (f *fakeBackend) Close() error                             { f.closed++; return nil }

// Lazy opens its backend once, at the first request, never before; an
// open that failed is not retried; Close closes only an opened backend.
func TestLazyOpensAtTheFirstRequest(t *testing.T) {
	fb := &fakeBackend{}
	opens := 0
	l := NewLazy("fake", func() (FrameBackend, error) { opens++; return fb, nil })
	if l.Attached() || opens != 0 {
		t.Fatal("opened before any request")
	}
	l.Serve(bounce.Request{Len: 1})
	l.Send([]byte{1})
	if !l.Attached() || opens != 1 || fb.served != 2 {
		t.Errorf("after two requests: attached %v, %d opens, %d served", l.Attached(), opens, fb.served)
	}
	if l.Close() != "" || fb.closed != 1 {
		t.Errorf("close: %d", fb.closed)
	}
	failed := NewLazy("broken", func() (FrameBackend, error) { opens++; return nil, errors.New("no such tap") })
	opens = 0
	for range 2 {
		if _, err := failed.Serve(bounce.Request{}); err == nil || !strings.Contains(err.Error(), "no such tap") {
			t.Errorf("err = %v", err)
		}
	}
	if opens != 1 || failed.Attached() || failed.Close() != "" {
		t.Errorf("a failed open: %d opens, attached %v", opens, failed.Attached())
	}
}
