package replay

import (
	"errors"
	"fmt"

	"github.com/ftkvm/ftkvm/vmm"
)

// ErrDiverged is wrapped by every DivergenceError.
var ErrDiverged = errors.New("replay diverged from the recording")

// DivergenceError says where a replay stopped following its log: the
// event, the point in the run, and what the log expected against what the
// replay found.
type DivergenceError struct {
	Seq      uint64    // the log event being matched (0: none)
	Point    vmm.Point // where the replay was
	What     string    // what disagreed
	Expected string
	Actual   string
}

func (e *DivergenceError) Error() string {
	s := fmt.Sprintf("replay diverged at %d exits (%v)", e.Point.Exits, e.Point.Kind)
	if e.Seq != 0 {
		s += fmt.Sprintf(", log event %d", e.Seq)
	}
	s += ": " + e.What
	if e.Expected != "" || e.Actual != "" {
		s += fmt.Sprintf(": expected %s, got %s", e.Expected, e.Actual)
	}
	return s
}

func (e *DivergenceError) Unwrap() error { return ErrDiverged }
