package ft

import (
	"strings"
	"testing"
)

func TestResendLog(t *testing.T) {
	type write struct {
		data     string
		released uint64
	}
	for _, c := range []struct {
		name   string
		writes []write
		from   uint64
		tail   string
		err    string // substring of check's error; "" for none
	}{
		{name: "nothing written", from: 0, tail: ""},
		{name: "nothing released yet: everything is re-sent",
			writes: []write{{"ab", 0}, {"cd", 0}}, from: 0, tail: "abcd"},
		{name: "from the last released count",
			writes: []write{{"ab", 0}, {"cd", 1}, {"ef", 4}}, from: 4, tail: "ef"},
		{name: "a count at the end of what was written re-sends only the last write",
			writes: []write{{"ab", 0}, {"cd", 2}, {"e", 4}}, from: 4, tail: "e"},
		{name: "a write without an Output event keeps the count",
			writes: []write{{"ab", 0}, {"cd", 2}, {"e", 2}}, from: 2, tail: "cde"},
		{name: "a count that goes back is an error",
			writes: []write{{"ab", 0}, {"cd", 2}, {"e", 1}}, err: "went back from 2 to 1"},
		{name: "a count beyond what the guest wrote is an error",
			writes: []write{{"ab", 0}, {"cd", 3}}, err: "beyond the 2 console bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r resendLog
			var firstErr error
			for _, w := range c.writes {
				if err := r.replayed([]byte(w.data), w.released); err != nil && firstErr == nil {
					firstErr = err
				}
			}
			if c.err != "" {
				if firstErr == nil || !strings.Contains(r.check().Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", firstErr, c.err)
				}
				if _, _, err := r.goLive(); err == nil || r.live {
					t.Fatal("went live with inconsistent counts")
				}
				return
			}
			if firstErr != nil {
				t.Fatal(firstErr)
			}
			from, tail, err := r.goLive()
			if err != nil || from != c.from || string(tail) != c.tail {
				t.Fatalf("goLive: from %d %q %v; want from %d %q", from, tail, err, c.from, c.tail)
			}
		})
	}
}

func TestResendLogKeepsOnlyUnreleased(t *testing.T) {
	var r resendLog
	r.replayed([]byte("abcdef"), 0)
	r.replayed([]byte("gh"), 6)
	if r.base != 6 || string(r.buf) != "gh" {
		t.Fatalf("kept %q from %d", r.buf, r.base)
	}
	r.replayed([]byte("i"), 8)
	if r.base != 8 || string(r.buf) != "i" {
		t.Fatalf("kept %q from %d", r.buf, r.base)
	}
	r.replayed(nil, 9) // everything written is released: nothing kept
	if r.base != 9 || r.buf != nil {
		t.Fatalf("kept %q from %d", r.buf, r.base)
	}
}

func TestResendLogAfterLive(t *testing.T) {
	var r resendLog
	r.replayed([]byte("ab"), 0)
	_, tail, _ := r.goLive()
	r.wrote(len(tail))
	r.wrote(3)
	if r.sent != 5 {
		t.Fatalf("sent %d", r.sent)
	}
	if err := r.replayed([]byte("x"), 0); err == nil {
		t.Fatal("replayed output accepted after going live")
	}
	if _, tail, err := r.goLive(); err != nil || len(tail) != 0 {
		t.Fatalf("second goLive re-sent %q (%v)", tail, err)
	}
}
