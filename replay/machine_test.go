package replay

import "github.com/ftkvm/ftkvm/internal/toyvm"

// The toy machine the recorder and the replayer are tested against lives
// in internal/toyvm, shared with ft's tests; these names keep the tests
// written against it here short.
type toyMachine = toyvm.Machine

// toyOp is a toyvm.Op in the short form the tests here write.
type toyOp struct {
	kind toyvm.Kind
	n    int
}

func newToy(prog []toyOp) *toyMachine {
	ops := make([]toyvm.Op, len(prog))
	for i, op := range prog {
		ops[i] = toyvm.Op{Kind: op.kind, N: op.n}
	}
	return toyvm.New(ops)
}

const (
	opWork  = toyvm.Work
	opSpin  = toyvm.Spin
	opCli   = toyvm.Cli
	opSti   = toyvm.Sti
	opClock = toyvm.Clock
	opTSC   = toyvm.TSC
	opIn    = toyvm.In
	opOut   = toyvm.Out
	opArm   = toyvm.Arm
	opDMA   = toyvm.DMA
	opHalt  = toyvm.Halt
	opEnd   = toyvm.End
)
