package ft

import (
	"context"
	"testing"
	"time"
)

// ToyPair lends the session tests' pair over toy machines to the external
// tests (package ft_test), which may import what imports ft (ftmetrics).
type ToyPair struct{ p *pair }

// NewToyPair is a pair running a program of lines console lines.
func NewToyPair(t *testing.T, lines int) *ToyPair { return &ToyPair{newPair(t, chatterProg(lines))} }

// Configs are the two sides' configurations, to change before Run.
func (tp *ToyPair) Configs() (primary, backup *Config) { return &tp.p.pCfg, &tp.p.bCfg }

// KillPrimaryAt kills the primary's host after its guest's exit n.
func (tp *ToyPair) KillPrimaryAt(n uint64) { tp.p.onPrimaryExit(n, tp.p.kill) }

// Run runs both sides to their end.
func (tp *ToyPair) Run() (primary, backup Result, pErr, bErr error) {
	tp.p.run()
	return tp.p.pRes, tp.p.bRes, tp.p.pErr, tp.p.bErr
}

// RunAlone runs the primary with no backup, waiting wait for one.
func (tp *ToyPair) RunAlone(wait time.Duration) (Result, error) {
	return RunPrimary(context.Background(), tp.p.pCfg, tp.p.l, wait)
}
