package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/vmm"
)

// DefaultCmdline boots the example guest in PIC mode with the 8250 console.
// lpj= presets the delay-loop calibration, which would otherwise spin for
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
}

func (o *guestOptions) register(fs *flag.FlagSet) {
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
}

// load creates nothing; it reads the guest's files and returns a loader.
func (o *guestOptions) load(vm *vmm.VM) (string, error) {
	switch {
	case o.image != "" && o.bareName != "":
		return "", usageError{errors.New("--image and --bare are exclusive")}
	case o.image != "" || o.bareName != "":
		if o.kernel != "" || o.initrd != "" {
			return "", usageError{errors.New("--kernel/--initrd do not apply to a bare guest")}
		}
		var img []byte
		name := o.image
		if o.bareName != "" {
			b, err := bare.Build(o.bareName)
			if err != nil {
				return "", err
			}
			img, name = b.Binary, "bare guest "+o.bareName
		} else {
			var err error
			if img, err = vmm.ReadFileLimited(o.image, int64(vm.Memory().Size())); err != nil {
				return "", err
			}
		}
		return name, vm.LoadBare(img)
	}
	kernel, initrd := o.kernel, o.initrd
	if kernel == "" {
		kernel = filepath.Join(o.guestDir, "vmlinux")
		if initrd == "" {
			initrd = filepath.Join(o.guestDir, "initramfs.cpio")
		}
		if _, err := os.Stat(kernel); err != nil {
			return "", fmt.Errorf("the example guest is not built (%v): run 'make guest' first, or pass --kernel", err)
		}
	}
	limit := int64(vm.Memory().Size())
	k, err := vmm.ReadFileLimited(kernel, limit)
	if err != nil {
		return "", fmt.Errorf("reading kernel: %w", err)
	}
	var rd []byte
	if initrd != "" {
		if rd, err = vmm.ReadFileLimited(initrd, limit); err != nil {
			return "", fmt.Errorf("reading initrd: %w", err)
		}
	}
	if err := vm.LoadLinux(vmm.LinuxSpec{Kernel: k, Initrd: rd, Cmdline: o.cmdline}); err != nil {
		return "", fmt.Errorf("%s: %w", kernel, err)
	}
	return "Linux " + kernel, nil
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
	o.register(fs)
	timeout := fs.Duration("timeout", 0, "stop the guest after this long (0: no limit)")
	quiet := fs.Bool("q", false, "no progress or summary lines on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, usageError{err}
	}
	if fs.NArg() > 0 {
		return 2, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	memBytes, err := parseSize(o.mem)
	if err != nil {
		return 2, usageError{fmt.Errorf("--mem: %w", err)}
	}
	vm, err := vmm.New(vmm.Config{MemoryBytes: memBytes, Console: os.Stdout, ConsoleInput: os.Stdin})
	if err != nil {
		return 1, err
	}
	defer vm.Close()
	what, err := o.load(vm)
	if err != nil {
		return 1, err
	}
	info := func(format string, a ...any) {
		if !*quiet {
			fmt.Fprintf(os.Stderr, "ftvm: "+format+"\n", a...)
		}
	}
	info("booting %s with %d MiB", what, memBytes>>20)
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	res, err := vm.Run(ctx)
	summary := fmt.Sprintf("%.1fs, %d exits, %d interrupts injected", res.Duration.Seconds(), res.Stats.SyncExits(), res.Stats.Interrupts)
	if err != nil {
		info("stopped after %s", summary)
		return 1, err
	}
	switch res.Reason {
	case vmm.StopExitPort:
		info("guest exited with status %d after %s", res.Status, summary)
		return res.Status, nil
	case vmm.StopPowerOff:
		info("guest powered off after %s", summary)
		return 0, nil
	default:
		info("guest requested a reset after %s; ftvm does not reboot guests", summary)
		return 3, nil
	}
}
