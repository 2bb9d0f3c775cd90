package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/snapshot"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// DefaultCmdline boots the example guest in PIC mode with the 8250 console.
// lpj= presets the delay-loop calibration (5000 is about the emulated speed), which would otherwise spin for
// several timer ticks; mitigations=off keeps speculation workarounds (verw,
// IBRS MSR writes) out of the guest's exit paths. The VMM appends a
// clearcpuid= option for features this host cannot hide (vmm.LinuxClearCPUID).
const DefaultCmdline = "console=ttyS0 reboot=k panic=-1 noapic nolapic lpj=5000 tsc=unstable mitigations=off"

// guestOptions are the flags that say which guest to boot; record and
// replay take the same ones.
type guestOptions struct {
	kernel, initrd, cmdline string
	image, bareName         string
	guestDir                string
	mem                     string
	trace                   string
	traceMem                bool
	traceMemFrom            uint64
	dma                     bool
	devices                 deviceOptions
}

// flagScope says which commands' guest flags to register: run shows none
// of those that only matter to a log or to an FT pair.
type flagScope int

const (
	scopeRun  flagScope = iota // ftvm run
	scopeLog                   // record, replay: also the flags that go into a log's header
	scopePair                  // primary, backup: also the flags for going live
)

func (o *guestOptions) register(fs *flag.FlagSet, scope flagScope) {
	o.devices.register(fs, scope)
	def := os.Getenv("FTKVM_GUEST_DIR")
	if def == "" {
		def = "guest/out"
	}
	fs.StringVar(&o.guestDir, "guest-dir", def, "directory holding the example guest (vmlinux, initramfs.cpio) built by 'make guest'; env FTKVM_GUEST_DIR")
	fs.StringVar(&o.kernel, "kernel", "", "uncompressed vmlinux to boot (default: GUEST_DIR/vmlinux)")
	fs.StringVar(&o.initrd, "initrd", "", "initramfs to pass the kernel (default: GUEST_DIR/initramfs.cpio when booting the example kernel: uncompressed, since unpacking gzip costs the guest about 45 M instructions)")
	fs.StringVar(&o.cmdline, "cmdline", DefaultCmdline, "kernel command line")
	fs.StringVar(&o.image, "image", "", "flat bare-guest binary, loaded and entered at 0x100000 in 64-bit mode")
	fs.StringVar(&o.bareName, "bare", "", "built-in bare test guest to assemble and run ("+strings.Join(bare.Names(), ", ")+")")
	fs.StringVar(&o.mem, "mem", "128M", "guest memory (K, M or G suffix)")
	fs.BoolVar(&o.traceMem, "trace-memory", false, "with --trace: add a CRC of all guest memory to each line (slow: reads all memory at every exit)")
	fs.Uint64Var(&o.traceMemFrom, "trace-memory-from", 0, "with --trace-memory: start the memory CRCs at this exit")
	fs.BoolVar(&o.dma, "dma", false, "add the DMA test device (vmm.AddDMATest; on by default for --bare dma); its backend returns random bytes after a random delay")
	fs.StringVar(&o.trace, "trace", "", "write one line per exit and injection (point, RIP, registers) to this file: diff a recording's trace against its replay's to see where they part")
}

// preparedGuest is a guest read from disk with its rdtsc/rdtscp sites
// patched to trapping OUTs (replay.PrepareBare, replay.PrepareLinux),
// ready to load into a VM, with ftvm's devices and exit trace.
type preparedGuest struct {
	prep         *replay.PreparedGuest // loads the guest, devices first (addDevices)
	name         string
	bare         bool
	kernel       []byte // patched vmlinux, or patched bare image
	initrd       []byte
	cmdline      string
	sites        *tscpatch.SiteTable
	nsites       int
	memory       uint64
	dma          bool
	trace        *bufio.Writer
	traceMem     bool
	traceMemFrom uint64
	traceF       *os.File
	devs         *guestDevices
}

// config completes a VM configuration with the guest's memory size, rdtsc
// sites and exit trace.
func (g *preparedGuest) config(c vmm.Config) vmm.Config {
	c.MemoryBytes, c.TSCSites = g.memory, g.sites
	c.Warn = func(msg string) { fmt.Fprintf(os.Stderr, "ftvm: warning: %s\n", msg) }
	if g.trace != nil {
		c.ExitTrace, c.TraceMemory, c.TraceMemoryFrom = g.trace, g.traceMem, g.traceMemFrom
	}
	return c
}

// close flushes and closes the exit trace, if any.
func (g *preparedGuest) close() error {
	g.devs.close()
	g.devs = nil
	if g.traceF == nil {
		return nil
	}
	err := g.trace.Flush()
	if cerr := g.traceF.Close(); err == nil {
		err = cerr
	}
	g.traceF = nil
	return err
}

// prepare reads the guest's files and patches its rdtsc sites.
func (o *guestOptions) prepare() (*preparedGuest, error) {
	memBytes, err := parseSize(o.mem)
	if err != nil {
		return nil, usageError{fmt.Errorf("--mem: %w", err)}
	}
	g := &preparedGuest{memory: memBytes, dma: o.dma}
	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err != nil {
			return nil, fmt.Errorf("--trace: %w", err)
		}
		g.traceF, g.trace, g.traceMem, g.traceMemFrom = f, bufio.NewWriterSize(f, 1<<20), o.traceMem, o.traceMemFrom
	}
	limit := int64(memBytes)
	var prep func() (*replay.PreparedGuest, error)
	switch {
	case o.image != "" && o.bareName != "":
		return nil, usageError{errors.New("--image and --bare are exclusive")}
	case o.image != "" || o.bareName != "":
		if o.kernel != "" || o.initrd != "" {
			return nil, usageError{errors.New("--kernel/--initrd do not apply to a bare guest")}
		}
		g.bare = true
		if o.bareName != "" {
			b, err := bare.Build(o.bareName)
			if err != nil {
				return nil, err
			}
			g.kernel, g.name = b.Binary, "bare guest "+o.bareName
			g.dma = g.dma || o.bareName == "dma"
		} else {
			if g.kernel, err = vmm.ReadFileLimited(o.image, limit); err != nil {
				return nil, err
			}
			g.name = "bare guest " + o.image
		}
		prep = func() (*replay.PreparedGuest, error) { return replay.PrepareBare(g.kernel) }
	default:
		kernel, initrd := o.kernel, o.initrd
		if kernel == "" {
			kernel = filepath.Join(o.guestDir, "vmlinux")
			if initrd == "" {
				initrd = filepath.Join(o.guestDir, "initramfs.cpio")
			}
			if _, err := os.Stat(kernel); err != nil {
				return nil, fmt.Errorf("the example guest is not built (%v): run 'make guest' first, or pass --kernel", err)
			}
		}
		if g.kernel, err = vmm.ReadFileLimited(kernel, limit); err != nil {
			return nil, fmt.Errorf("reading kernel: %w", err)
		}
		if initrd != "" {
			if g.initrd, err = vmm.ReadFileLimited(initrd, limit); err != nil {
				return nil, fmt.Errorf("reading initrd: %w", err)
			}
		}
		g.name, g.cmdline = "Linux "+kernel, o.cmdline
		if err := vmm.CheckKernel(g.kernel); err != nil {
			return nil, fmt.Errorf("%s: %w", kernel, err)
		}
		prep = func() (*replay.PreparedGuest, error) { return replay.PrepareLinux(g.kernel, g.initrd, g.cmdline) }
	}
	p, err := prep()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.name, err)
	}
	p.MemoryBytes, p.Devices = memBytes, g.addDevices
	g.prep, g.kernel, g.sites, g.nsites = p, p.Kernel, p.Sites, p.RDTSCSites
	if g.devs, err = o.devices.open(); err != nil {
		return nil, err
	}
	if o.devices.work != "" {
		if g.bare {
			return nil, usageError{errors.New("--work applies to the example Linux guest")}
		}
		g.cmdline = strings.TrimSpace(g.cmdline + " ftkvm.work=" + o.devices.work)
		p.Cmdline = g.cmdline
	}
	return g, nil
}

// load puts the prepared guest into vm: its devices, then its image.
func (g *preparedGuest) load(vm *vmm.VM) error { return g.prep.Load(vm) }

// addDevices adds the guest's devices to vm (load does, and a restore
// from a snapshot, which loads no image).
func (g *preparedGuest) addDevices(vm *vmm.VM) error {
	if g.dma {
		// A replay puts the engine in replay mode: this backend then
		// never runs and the data comes from the log.
		if _, err := vm.AddDMATest(randomDMA); err != nil {
			return err
		}
	}
	return g.devs.add(vm)
}

// randomDMA is the DMA test device's backend: random bytes after a random
// delay of up to 3 ms.
func randomDMA(req bounce.Request) ([]byte, error) {
	time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
	b := make([]byte, req.Len)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b, nil
}

func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"), strings.HasSuffix(s, "k"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "g"):
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func cmdRun(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o guestOptions
	o.register(fs, scopeRun)
	timeout := fs.Duration("timeout", 0, "stop the guest after this long (0: no limit)")
	quiet := fs.Bool("q", false, "no progress or summary lines on stderr")
	var so snapshotOptions
	so.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return exitUsage, err
	}
	if err := so.check(); err != nil {
		return exitUsage, err
	}
	g, err := o.prepare()
	if err != nil {
		return exitError, err
	}
	defer g.close()
	if err := checkKVM(); err != nil {
		return exitNoKVM, err
	}
	cfg := g.config(vmm.Config{Options: vmm.Options{Console: os.Stdout, ConsoleInput: os.Stdin}})
	var saved *snapshot.File
	if so.restore != "" {
		if saved, err = readSnapshot(so.restore); err != nil {
			return exitCode(err), err
		}
		sc := saved.Config()
		cfg.MemoryBytes, cfg.Clock, cfg.Epoch = sc.MemoryBytes, sc.Clock, sc.Epoch
	}
	if so.after > 0 {
		cfg.Driver, cfg.ConsoleInput = snapshot.StopAfter(vmm.NewLiveDriver(os.Stdin), so.after), nil
	}
	vm, err := vmm.New(cfg)
	if err != nil {
		return 1, err
	}
	defer vm.Close()
	info := infof(*quiet)
	if saved != nil {
		if err := g.addDevices(vm); err != nil {
			return 1, err
		}
		if err := saved.Restore(vm, g.identity()); err != nil {
			return exitCode(err), fmt.Errorf("%s: %w", so.restore, err)
		}
		info("restored %s from %s (%d MiB, saved at exit %d)", g.name, so.restore, cfg.MemoryBytes>>20, saved.Header.Exits)
	} else {
		if err := g.load(vm); err != nil {
			return 1, err
		}
		info("booting %s with %d MiB (%d rdtsc sites patched)", g.name, g.memory>>20, g.nsites)
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()
	res, err := vm.Run(ctx)
	if stop := err; errors.Is(stop, snapshot.ErrStopped) {
		if err := writeSnapshot(ctx, so.file, vm, g.identity()); err != nil {
			return exitError, err
		}
		info("%v; snapshot written to %s", stop, so.file)
		return exitOK, nil
	}
	return report(info, res, err)
}

func infof(quiet bool) func(string, ...any) {
	return func(format string, a ...any) {
		if !quiet {
			fmt.Fprintf(os.Stderr, "ftvm: "+format+"\n", a...)
		}
	}
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

// report turns a run's outcome into ftvm's exit status (exit.go): 0 for
// a power-off or status 0, exitGuestStatus for the guest's own non-zero
// status (said on stderr even with -q: it is the run's result),
// exitReset for a reset request; an error's status is exitCode's.
func report(info func(string, ...any), res vmm.Result, err error) (int, error) {
	summary := fmt.Sprintf("%.1fs, %d exits, %d interrupts injected", res.Duration.Seconds(), res.Stats.SyncExits(), res.Stats.Interrupts)
	if err != nil {
		info("stopped after %s", summary)
		return exitCode(err), err
	}
	switch res.Reason {
	case vmm.StopExitPort:
		if res.Status != 0 {
			fmt.Fprintf(os.Stderr, "ftvm: guest exited with status %d after %s\n", res.Status, summary)
			return exitGuestStatus, nil
		}
		info("guest exited with status 0 after %s", summary)
		return exitOK, nil
	case vmm.StopPowerOff:
		info("guest powered off after %s", summary)
		return exitOK, nil
	default:
		info("guest requested a reset after %s; ftvm does not reboot guests", summary)
		return exitReset, nil
	}
}
