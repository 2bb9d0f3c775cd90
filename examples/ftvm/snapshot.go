package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ftkvm/ftkvm/snapshot"
	"github.com/ftkvm/ftkvm/vmm"
)

// snapshotOptions are run's flags for saving a guest to a file and
// starting it again from one.
type snapshotOptions struct {
	file    string
	after   time.Duration
	restore string
}

func (o *snapshotOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "snapshot", "", "with --snapshot-after: write the stopped guest (vCPU, devices, memory) to this file, atomically")
	fs.DurationVar(&o.after, "snapshot-after", 0, "stop the guest at its first exit after this much guest run time and write --snapshot")
	fs.StringVar(&o.restore, "restore", "", "start from this snapshot instead of booting: give the guest and device flags of the saved run (--mem comes from the snapshot)")
}

func (o *snapshotOptions) check() error {
	switch {
	case (o.file != "") != (o.after > 0):
		return usageError{errors.New("--snapshot and --snapshot-after go together")}
	case o.after < 0:
		return usageError{errors.New("--snapshot-after must be positive")}
	}
	return nil
}

// identity names the guest image in a snapshot's header: its rdtsc sites
// are patched and trapped by the VM, so a restore needs the same image.
func (g *preparedGuest) identity() string {
	sum := sha256.Sum256(g.kernel)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// maxSnapshotFile bounds the snapshot file ftvm reads whole.
const maxSnapshotFile = snapshot.MaxMemoryBytes + snapshot.MaxStateBytes + snapshot.MaxHeaderBytes + 1<<10

func readSnapshot(path string) (*snapshot.File, error) {
	data, err := vmm.ReadFileLimited(path, maxSnapshotFile)
	if err != nil {
		return nil, err
	}
	f, err := snapshot.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// writeSnapshot saves vm to path through a temporary file in the same
// directory, synced and renamed: path is either the old file or the whole
// new snapshot, never a part.
func writeSnapshot(ctx context.Context, path string, vm *vmm.VM, guest string) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".partial-*")
	if err != nil {
		return fmt.Errorf("--snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Quiescing waits for the disk's transfers in flight: bounded, for
	// a backend that hangs.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := snapshot.Write(ctx, tmp, vm, guest, version()); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("--snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--snapshot: %w", err)
	}
	return nil
}
