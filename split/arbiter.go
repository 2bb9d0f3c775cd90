package split

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Arbiter decides which node of an FT pair may run the VM in the pair's
// current generation. Implementations must make TestAndSet atomic across
// nodes: for one pair and generation, at most one node ever gets nil.
type Arbiter interface {
	// TestAndSet claims the right to run the VM in the pair's current
	// generation. It returns nil if this node won the claim now or holds
	// it already; an error wrapping ErrLost (a *LostError naming the
	// winner) if another node holds it; or an error wrapping
	// ErrUnreachable or ErrCorrupt if the decision could not be read from
	// the storage. On any error the caller must not go live.
	TestAndSet(ctx context.Context) error

	// Owner reports the claim for the current generation, for status
	// output. Record.Owner is empty if nobody has claimed it yet.
	Owner(ctx context.Context) (Record, error)

	// Advance starts the next generation, for re-protection: the live node
	// calls it before a new backup joins and gives the new backup the
	// returned generation. It first claims the current generation (the
	// same as TestAndSet), so a node of an older generation can never win
	// afterwards, then moves on. On error the generation stays where it
	// was; an ErrLost error means another node is live, and this one must
	// halt.
	Advance(ctx context.Context) (uint64, error)

	// Generation is the pair generation this arbiter claims in.
	Generation() uint64
}

// Record is a claim: node Owner runs pair Pair in generation Generation,
// claimed at When (Owner's wall clock, for people; nothing depends on it).
type Record struct {
	Pair       string
	Generation uint64
	Owner      string
	When       time.Time
}

// Sentinel errors. Every error the package returns wraps one of these (and,
// where there is one, the underlying error) and says in its message which
// pair, generation and path it concerns.
var (
	// ErrLost: another node holds the claim; the error is a *LostError
	// naming it. The loser halts itself.
	ErrLost = errors.New("lost the claim")
	// ErrUnreachable: the storage could not be reached or did not complete
	// an operation in time: missing directory, permission denied, I/O
	// error, no space, hard links unsupported, timeout, or a context that
	// ended first. The node must not go live.
	ErrUnreachable = errors.New("storage unreachable")
	// ErrCorrupt: the storage holds a record that cannot be trusted:
	// unparseable, failing its checksum, naming another pair or
	// generation, or a claim for a generation that has not started yet.
	// Nobody can be shown to be the winner, so the node must not go live;
	// an operator has to look.
	ErrCorrupt = errors.New("corrupt claim record")
	// ErrInvalidConfig: NewFileArbiter found a bad FileConfig field.
	ErrInvalidConfig = errors.New("split: invalid config")
)

// LostError is returned (wrapped or not; use errors.As) when another node
// holds the claim. It unwraps to ErrLost.
type LostError struct {
	// Winner is the claim that beat this node.
	Winner Record
	// Path locates the claim on the storage, for the operator.
	Path string
}

func (e *LostError) Error() string {
	return fmt.Sprintf("split: pair %s generation %d: %v to node %q (claimed %s, record %s)",
		e.Winner.Pair, e.Winner.Generation, ErrLost, e.Winner.Owner,
		e.Winner.When.Format(time.RFC3339Nano), e.Path)
}

// Unwrap makes errors.Is(err, ErrLost) true.
func (e *LostError) Unwrap() error { return ErrLost }
