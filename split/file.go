package split

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultTimeout bounds each FileArbiter operation when FileConfig.Timeout
// is zero.
const DefaultTimeout = 2 * time.Second

// maxNameBytes bounds pair and node names.
const maxNameBytes = 200

// FileConfig configures a FileArbiter.
type FileConfig struct {
	// Dir is a directory on storage that both nodes of the pair mount, as
	// an absolute path. Required. It must exist: the arbiter never creates
	// it, so a missing mount is reported rather than papered over with an
	// empty local directory. It must support hard links (see the package
	// documentation).
	Dir string
	// Pair names the FT pair: letters, digits, '.', '_' and '-', not
	// starting with '.'. Required. Claim files are named after it, so
	// several pairs can share Dir.
	Pair string
	// Node names this node, as recorded in a claim and reported to the
	// loser: printable, no spaces. Required. The two nodes of a pair must
	// use different names, and a node must not run two arbiters for the
	// same pair and generation, because a claim recorded under this name
	// counts as held by this arbiter.
	Node string
	// Generation is the pair generation this node belongs to, >= 1. Both
	// nodes of a pair must use the same one: the first pair starts at 1
	// (or, for a pair name used before, above FileArbiter.Latest), and a
	// new backup takes the generation returned by the live node's Advance.
	// It comes from the pair's own handshake, never from the storage: see
	// the package documentation.
	Generation uint64
	// Timeout bounds each trip to the storage, waiting for an earlier
	// blocked one included; past it the operation fails with
	// ErrUnreachable. TestAndSet, Owner and Latest make one trip, Advance
	// two. Zero means DefaultTimeout. A context deadline, if earlier, wins.
	Timeout time.Duration
}

func (c *FileConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Dir == "":
		return bad("Dir is required (a directory on storage both nodes mount)")
	case !filepath.IsAbs(c.Dir):
		return bad("Dir %q is not an absolute path", c.Dir)
	case c.Generation == 0:
		return bad("Generation is required (>= 1, from the pair's handshake)")
	case c.Generation == math.MaxUint64:
		return bad("Generation %d leaves no room to advance", c.Generation)
	case c.Timeout < 0:
		return bad("negative Timeout %v", c.Timeout)
	}
	if err := checkPair(c.Pair); err != nil {
		return bad("Pair: %v", err)
	}
	if err := checkNode(c.Node); err != nil {
		return bad("Node: %v", err)
	}
	return nil
}

func checkPair(name string) error {
	if name == "" || len(name) > maxNameBytes {
		return fmt.Errorf("%q: want 1 to %d bytes", name, maxNameBytes)
	}
	if name[0] == '.' {
		return fmt.Errorf("%q starts with '.'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q: character %q not allowed (letters, digits, '.', '_', '-')", name, c)
		}
	}
	return nil
}

func checkNode(name string) error {
	if name == "" || len(name) > maxNameBytes {
		return fmt.Errorf("%q: want 1 to %d bytes", name, maxNameBytes)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%q is not UTF-8", name)
	}
	for _, c := range name {
		if !unicode.IsPrint(c) || unicode.IsSpace(c) {
			return fmt.Errorf("%q: character %q not allowed (printable, no spaces)", name, c)
		}
	}
	return nil
}

// FileArbiter is the default Arbiter: claims are hard links to small
// record files in a directory on shared storage. The package documentation
// explains the protocol and why it is atomic. Its methods are safe for
// concurrent use; storage calls run one at a time.
type FileArbiter struct {
	dir     string
	pair    string
	node    string
	timeout time.Duration

	gen       atomic.Uint64
	advanceMu sync.Mutex // serialises Advance

	// slot holds one token while a storage call runs, including one that
	// an earlier operation gave up on because it hung: later operations
	// wait for it (within their own deadline) instead of piling up more
	// blocked goroutines.
	slot chan struct{}

	// Test seams. hook, if set, runs in the storage goroutine before the
	// syscalls of operation op, so a test can make the storage hang. now
	// stamps Record.When.
	hook func(op string)
	now  func() time.Time
}

var _ Arbiter = (*FileArbiter)(nil)

// NewFileArbiter checks cfg and returns an arbiter for it. It does no IO:
// storage problems surface, with the path, from the first operation.
func NewFileArbiter(cfg FileConfig) (*FileArbiter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &FileArbiter{
		dir:     filepath.Clean(cfg.Dir),
		pair:    cfg.Pair,
		node:    cfg.Node,
		timeout: cfg.Timeout,
		slot:    make(chan struct{}, 1),
		now:     time.Now,
	}
	if a.timeout == 0 {
		a.timeout = DefaultTimeout
	}
	a.gen.Store(cfg.Generation)
	return a, nil
}

// Generation is the pair generation this arbiter claims in: the configured
// one, plus one for each successful Advance.
func (a *FileArbiter) Generation() uint64 { return a.gen.Load() }

// ClaimPath is the claim file for generation gen:
// <Dir>/<Pair>.g<gen>.claim.
func (a *FileArbiter) ClaimPath(gen uint64) string {
	return filepath.Join(a.dir, a.pair+".g"+strconv.FormatUint(gen, 10)+".claim")
}

// TestAndSet claims the current generation; see Arbiter. It returns nil
// only once the claim file names this node and its directory entry has
// been synced.
func (a *FileArbiter) TestAndSet(ctx context.Context) error {
	return a.testAndSet(ctx, a.gen.Load())
}

func (a *FileArbiter) testAndSet(ctx context.Context, gen uint64) error {
	rec, err := run(ctx, a, gen, "claiming", func() (Record, error) {
		rec, err := a.claim(gen)
		if err == nil && rec.Owner == a.node {
			// Whether linked just now or by an earlier call whose answer
			// was lost, make the name durable before anyone goes live.
			err = a.syncDir(gen)
		}
		return rec, err
	})
	if err != nil {
		return err
	}
	if rec.Owner != a.node {
		return &LostError{Winner: rec, Path: a.ClaimPath(gen)}
	}
	return nil
}

// Owner reads the claim for the current generation; see Arbiter.
func (a *FileArbiter) Owner(ctx context.Context) (Record, error) {
	gen := a.gen.Load()
	return run(ctx, a, gen, "reading claim", func() (Record, error) {
		return a.readClaim(gen)
	})
}

// Advance claims the current generation and moves this arbiter to the
// next; see Arbiter. It also fails, with ErrCorrupt, if the next
// generation is already claimed: that generation was started by something
// else (the pair name used twice, or a stale configuration).
func (a *FileArbiter) Advance(ctx context.Context) (uint64, error) {
	a.advanceMu.Lock()
	defer a.advanceMu.Unlock()
	gen := a.gen.Load()
	if gen == math.MaxUint64 {
		return gen, a.errorf(gen, ErrCorrupt, nil, "cannot advance past the largest generation")
	}
	if err := a.testAndSet(ctx, gen); err != nil {
		return gen, err
	}
	next := gen + 1
	rec, err := run(ctx, a, next, "checking the next generation", func() (Record, error) {
		return a.readClaim(next)
	})
	if err != nil {
		return gen, err
	}
	if rec.Owner != "" {
		return gen, a.errorf(next, ErrCorrupt, nil,
			"already claimed by node %q (record %s) before it was started: is pair name %q used twice?",
			rec.Owner, a.ClaimPath(next), a.pair)
	}
	a.gen.Store(next)
	return next, nil
}

// Latest reads the claim of the highest claimed generation of the pair in
// Dir, for status output and for choosing the first generation of a pair
// name that was used before. With no claim at all it returns a Record
// with only Pair set.
func (a *FileArbiter) Latest(ctx context.Context) (Record, error) {
	return run(ctx, a, 0, "scanning for claims", func() (Record, error) {
		entries, err := a.readDir()
		if err != nil {
			return Record{}, err
		}
		var top uint64
		for _, e := range entries {
			if g, ok := a.parseClaimName(e.Name()); ok && g > top {
				top = g
			}
		}
		if top == 0 {
			return Record{Pair: a.pair}, nil
		}
		return a.readClaim(top)
	})
}

// readDir lists Dir, refusing without blocking anything but a directory.
func (a *FileArbiter) readDir() ([]fs.DirEntry, error) {
	d, err := openNoBlock(a.dir)
	if err != nil {
		return nil, a.errorf(0, ErrUnreachable, err, "listing %s", a.dir)
	}
	defer d.Close()
	if st, err := d.Stat(); err != nil || !st.IsDir() {
		return nil, a.errorf(0, ErrUnreachable, err, "listing %s: not a directory", a.dir)
	}
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, a.errorf(0, ErrUnreachable, err, "listing %s", a.dir)
	}
	return entries, nil
}

// parseClaimName returns the generation of a claim file name of this pair.
func (a *FileArbiter) parseClaimName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, a.pair+".g")
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest, ".claim")
	if !ok {
		return 0, false
	}
	g, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || g == 0 || strconv.FormatUint(g, 10) != digits {
		return 0, false
	}
	return g, true
}

// claim runs the protocol for generation gen and returns the record the
// claim file holds afterwards: this node's if it won now or earlier,
// the winner's otherwise. It runs in the storage goroutine.
func (a *FileArbiter) claim(gen uint64) (Record, error) {
	rec, err := a.readClaim(gen)
	if err != nil || rec.Owner != "" {
		return rec, err // decided already: claims are never changed or removed
	}

	// Write the complete record under a unique name first, so the claim
	// name, once it exists, always holds a whole, synced record.
	mine := Record{Pair: a.pair, Generation: gen, Owner: a.node, When: a.now().UTC()}
	tmp, err := a.writeTemp(gen, encodeRecord(mine))
	if err != nil {
		return Record{}, err
	}
	// The claim name keeps the inode alive. A temporary file left behind
	// by a crash is harmless: no claim name matches it.
	defer os.Remove(tmp)

	path := a.ClaimPath(gen)
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return Record{}, a.errorf(gen, ErrUnreachable, err,
			"creating claim %s (the storage must support hard links)", path)
	}
	// Whatever link returned, the claim file now names the winner. Reading
	// it back instead of trusting link's result covers NFS, where a
	// retransmitted LINK can fail with EEXIST although the first one won.
	rec, err = a.readClaim(gen)
	if err != nil {
		return rec, err
	}
	if rec.Owner == "" {
		return Record{}, a.errorf(gen, ErrCorrupt, nil,
			"claim %s missing right after linking it: claims must never be removed", path)
	}
	return rec, nil
}

// readClaim reads and checks the claim file of generation gen. An absent
// claim gives a Record with an empty Owner, but only if Dir is there: a
// missing directory is ErrUnreachable.
func (a *FileArbiter) readClaim(gen uint64) (Record, error) {
	path := a.ClaimPath(gen)
	f, err := openNoBlock(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := a.checkDir(gen); err != nil {
			return Record{}, err
		}
		return Record{Pair: a.pair, Generation: gen}, nil
	}
	if err != nil {
		if st, serr := os.Stat(path); serr == nil && !st.Mode().IsRegular() {
			// A socket, say, which open(2) refuses with ENXIO.
			return Record{}, a.errorf(gen, ErrCorrupt, nil, "claim %s is not a regular file (%v): refusing it, nothing is claimed", path, st.Mode().Type())
		}
		return Record{}, a.errorf(gen, ErrUnreachable, err, "reading claim")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Record{}, a.errorf(gen, ErrUnreachable, err, "reading claim")
	}
	if !st.Mode().IsRegular() {
		return Record{}, a.errorf(gen, ErrCorrupt, nil, "claim %s is not a regular file (%v): refusing it, nothing is claimed", path, st.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRecordBytes+1))
	if err != nil {
		return Record{}, a.errorf(gen, ErrUnreachable, err, "reading claim")
	}
	rec, err := decodeRecord(data)
	if err != nil {
		return Record{}, a.errorf(gen, ErrCorrupt, nil, "claim %s: %v", path, err)
	}
	if rec.Pair != a.pair || rec.Generation != gen {
		return Record{}, a.errorf(gen, ErrCorrupt, nil,
			"claim %s is for pair %q generation %d", path, rec.Pair, rec.Generation)
	}
	return rec, nil
}

// openNoBlock opens path for reading without waiting on a special file:
// open(2) of a FIFO without a writer (or of a terminal-like device) blocks
// until one appears, which on a claim path would hold the storage slot for
// good. With O_NONBLOCK it returns at once, and the caller's fstat refuses
// what is not a regular file (a directory for Dir). A regular file ignores
// O_NONBLOCK: reading it still blocks only as the storage does.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// checkDir reports a missing or unusable Dir as ErrUnreachable.
func (a *FileArbiter) checkDir(gen uint64) error {
	st, err := os.Stat(a.dir)
	if err != nil {
		return a.errorf(gen, ErrUnreachable, err, "claim directory")
	}
	if !st.IsDir() {
		return a.errorf(gen, ErrUnreachable, nil, "claim directory %s is not a directory", a.dir)
	}
	return nil
}

// writeTemp writes data to a new, uniquely named file in Dir and syncs it.
func (a *FileArbiter) writeTemp(gen uint64, data []byte) (string, error) {
	name := filepath.Join(a.dir, "."+a.pair+".g"+strconv.FormatUint(gen, 10)+"."+rand.Text()+".tmp")
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", a.errorf(gen, ErrUnreachable, err, "writing claim record")
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", a.errorf(gen, ErrUnreachable, err, "writing claim record %s", name)
	}
	return name, nil
}

// syncDir makes Dir's entries durable. Filesystems that cannot fsync a
// directory say EINVAL; NFS needs none, since a server exported with sync
// (see the package documentation) commits a LINK before answering it.
func (a *FileArbiter) syncDir(gen uint64) error {
	d, err := openNoBlock(a.dir)
	if err != nil {
		return a.errorf(gen, ErrUnreachable, err, "syncing claim directory")
	}
	err = d.Sync()
	d.Close()
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return a.errorf(gen, ErrUnreachable, err, "syncing claim directory")
	}
	return nil
}

// errorf formats "split: pair P generation G: <sentinel>: <what>[: cause]".
// gen 0 leaves the generation out.
func (a *FileArbiter) errorf(gen uint64, sentinel, cause error, format string, args ...any) error {
	where := "split: pair " + a.pair
	if gen != 0 {
		where += " generation " + strconv.FormatUint(gen, 10)
	}
	what := fmt.Sprintf(format, args...)
	if cause == nil {
		return fmt.Errorf("%s: %w: %s", where, sentinel, what)
	}
	return fmt.Errorf("%s: %w: %s: %w", where, sentinel, what, cause)
}

// run calls fn, which does the storage syscalls of one operation, on its
// own goroutine and waits for it until ctx ends or the arbiter's timeout
// passes, whichever is first. A syscall on a hung mount (an NFS hard
// mount whose server is gone) blocks in the kernel and cannot be
// interrupted, so on timeout run returns ErrUnreachable and leaves the
// goroutine behind: it may stay blocked, and if the storage comes back it
// finishes its work and its result is dropped. Such a goroutine keeps the
// arbiter's storage slot until it returns.
func run[T any](ctx context.Context, a *FileArbiter, gen uint64, op string, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, a.errorf(gen, ErrUnreachable, err, "%s in %s: not started", op, a.dir)
	}
	timer := time.NewTimer(a.timeout)
	defer timer.Stop()

	select {
	case a.slot <- struct{}{}:
	case <-ctx.Done():
		return zero, a.errorf(gen, ErrUnreachable, ctx.Err(),
			"%s in %s: an earlier storage call is still blocked", op, a.dir)
	case <-timer.C:
		return zero, a.errorf(gen, ErrUnreachable, nil,
			"%s in %s: an earlier storage call is still blocked after %v (hung mount?)", op, a.dir, a.timeout)
	}

	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-a.slot }()
		if a.hook != nil {
			a.hook(op)
		}
		v, err := fn()
		done <- result{v, err}
	}()

	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		select {
		case r := <-done: // finished at the same moment: the answer is good
			return r.v, r.err
		default:
		}
		return zero, a.errorf(gen, ErrUnreachable, ctx.Err(),
			"%s in %s: no answer before the context ended (the call may stay blocked in the background)", op, a.dir)
	case <-timer.C:
		select {
		case r := <-done:
			return r.v, r.err
		default:
		}
		return zero, a.errorf(gen, ErrUnreachable, nil,
			"%s in %s: no answer within %v (hung mount?) (the call may stay blocked in the background)", op, a.dir, a.timeout)
	}
}
