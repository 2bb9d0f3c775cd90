package fttest

import (
	"errors"
	"testing"
)

func TestCheckFailoverOutput(t *testing.T) {
	const ref = "line 1\nline 2\nline 3\n"
	ok := []struct{ p, b string }{
		{ref, ""},                                // the primary finished
		{"", ref},                                // killed before any output
		{"line 1\nli", "line 2\nline 3\n"},       // no overlap
		{"line 1\nline 2\n", "line 2\nline 3\n"}, // a duplicated overlap
	}
	for _, c := range ok {
		if err := CheckFailoverOutput(ref, c.p, c.b); err != nil {
			t.Errorf("primary %q, backup %q: %v", c.p, c.b, err)
		}
	}
	bad := []struct{ p, b string }{
		{"line 1\n", "line 3\n"},          // "line 2" lost
		{"line X\n", "line 2\nline 3\n"},  // the primary's is not a prefix
		{"line 1\n", "line 2\nline 3\nx"}, // the backup's is not a suffix
		{"line 1\n", ref + "line 1\n"},    // longer than the reference
	}
	for _, c := range bad {
		if err := CheckFailoverOutput(ref, c.p, c.b); !errors.Is(err, ErrOutput) {
			t.Errorf("primary %q, backup %q: err = %v, want ErrOutput", c.p, c.b, err)
		}
	}
}

func TestLogHelpers(t *testing.T) {
	log := "a: one\nb: re-sending 4 console bytes from offset 7\nc: three\n"
	if got := Tail(log, 2); got != "b: re-sending 4 console bytes from offset 7\nc: three" {
		t.Errorf("Tail = %q", got)
	}
	if got := Line(log, "re-sending"); got != "b: re-sending 4 console bytes from offset 7" {
		t.Errorf("Line = %q", got)
	}
	if got := After(log, "re-sending "); got[:1] != "4" || After(log, "absent") != "" {
		t.Errorf("After = %q", got)
	}
}

func TestJunction(t *testing.T) {
	log := "ft backup: WON the test-and-set: LIVE at exit 9; re-sending 3 console bytes from offset 4\n"
	for _, c := range []struct {
		p, b, log, out string
		live, bad      bool
	}{
		{"abcdefg", "efgXY", log, "abcdefgXY", true, false},              // 3 bytes twice
		{"abcd", "XY", log, "abcdXY", true, false},                       // the backup re-sent from the very end
		{"abcdefg", "eXgXY", log, "", true, true},                        // garbled
		{"abc", "XY", log, "", true, true},                               // offset past what was released: lost
		{"abcdefg", "", "finished as backup\n", "abcdefg", false, false}, // never went live
	} {
		out, _, live, err := Junction(c.p, c.b, c.log)
		if live != c.live || (err != nil) != c.bad || (!c.bad && out != c.out) {
			t.Errorf("Junction(%q, %q) = %q, live %v, %v; want %q, live %v, error %v", c.p, c.b, out, live, err, c.out, c.live, c.bad)
		}
		if c.bad && !errors.Is(err, ErrOutput) {
			t.Errorf("Junction(%q, %q): error %v does not wrap ErrOutput", c.p, c.b, err)
		}
	}
}

func TestPointsFor(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want int
	}{
		{nil, 2},
		{map[string]string{"FTKVM_SOAK": "1"}, 10},
		{map[string]string{"FTKVM_SOAK": "yes"}, 2},
		{map[string]string{"X_POINTS": "5"}, 5},
		{map[string]string{"X_POINTS": "5", "FTKVM_SOAK": "1"}, 5},
		{map[string]string{"X_POINTS": "0"}, 0},
		{map[string]string{"X_POINTS": "-3"}, 2},
		{map[string]string{"X_POINTS": "many", "FTKVM_SOAK": "1"}, 10},
	} {
		got, why := PointsFor(func(k string) string { return c.env[k] }, "X_POINTS", 2, 10)
		if got != c.want || why == "" {
			t.Errorf("env %v: %d (%s), want %d", c.env, got, why, c.want)
		}
	}
}
