package testbed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQEMUArgs(t *testing.T) {
	a := qemuArgs(qemuConfig{
		Kernel: "/k", Initrd: "/i", Ctl: "/tmp/ctl", Dir: "/work/a,b",
		MemMB: 2048, Extra: []string{"-x", "y"},
	})
	s := strings.Join(a, " ")
	for _, want := range []string{
		"-machine q35 -accel tcg",
		"-cpu EPYC,+svm,+npt",
		"-smp 1",
		"-m 2048",
		"-nographic -nodefaults -no-reboot",
		"-kernel /k -initrd /i",
		"-append " + KernelCmdline,
		"-virtfs local,path=/,mount_tag=host,security_model=none,multidevs=remap,readonly=on",
		"-virtfs local,path=/tmp/ctl,mount_tag=ctl,security_model=none,multidevs=remap ",
		// A comma in a path is doubled, QEMU's escape.
		"-virtfs local,path=/work/a,,b,mount_tag=dir,security_model=none,multidevs=remap ",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("args lack %q:\n%s", want, s)
		}
	}
	if !strings.HasSuffix(s, " -x y") {
		t.Errorf("extra args not last: %s", s)
	}
	for _, kw := range []string{"panic=-1", "quiet", "loglevel=1", "console=ttyS0"} {
		if !strings.Contains(KernelCmdline, kw) {
			t.Errorf("kernel command line lacks %s", kw)
		}
	}
	if strings.Contains(s, "mount_tag=dir") != true || strings.Contains(s, "netdev") {
		t.Errorf("unexpected devices: %s", s)
	}
	if b := strings.Join(qemuArgs(qemuConfig{Kernel: "/k", Initrd: "/i", Ctl: "/c", MemMB: 1}), " "); strings.Contains(b, "mount_tag=dir") {
		t.Errorf("no Dir, but a dir share: %s", b)
	}
}

func TestLinkArgs(t *testing.T) {
	l := qemuArgs(qemuConfig{Link: &Link{Port: 5555, Listen: true, Addr: "fe80::a"}})
	c := qemuArgs(qemuConfig{Link: &Link{Port: 5555, Addr: "fe80::b"}})
	want := func(args []string, s string) {
		t.Helper()
		if !slices.Contains(args, s) {
			t.Errorf("args lack %q: %q", s, args)
		}
	}
	want(l, "socket,id=link0,listen=127.0.0.1:5555")
	want(c, "socket,id=link0,connect=127.0.0.1:5555")
	want(l, "virtio-net-pci,netdev=link0,mac=52:54:00:f7:4b:01")
	want(c, "virtio-net-pci,netdev=link0,mac=52:54:00:f7:4b:02")
}

func TestOptionsDefaultsAndChecks(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.MemMB != DefaultMemMB || o.Timeout != DefaultTimeout || o.Hostname == "" {
		t.Errorf("defaults not applied: %+v", o)
	}
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	o, err = Options{Dir: link}.withDefaults()
	if real, _ := filepath.EvalSymlinks(dir); err != nil || o.Dir != real {
		t.Errorf("Dir through a symlink: %q, %v; want %q", o.Dir, err, real)
	}
	for name, bad := range map[string]Options{
		"Dir missing":     {Dir: filepath.Join(dir, "nope")},
		"Env name":        {Env: map[string]string{"A-B": "x"}},
		"Link addr IPv4":  {Link: &Link{Port: 1, Addr: "10.0.0.1"}},
		"Link addr v6":    {Link: &Link{Port: 1, Addr: "2001:db8::1"}},
		"Link port":       {Link: &Link{Port: 0, Addr: "fe80::a"}},
		"memory too tiny": {MemMB: 16},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The generated run.sh exports exactly the environment asked for, quoted
// safely, and enters Dir.
func TestRunScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	o := Options{
		Dir: dir,
		Env: map[string]string{"ODD": `it's "quoted" $HOME ` + "`x`\nline2", "PATH": "/custom"},
	}
	s := runScript(o)
	if !strings.Contains(s, "export HOME='/root'") || !strings.Contains(s, "export TERM='dumb'") {
		t.Errorf("defaults missing:\n%s", s)
	}
	// Run it with the script replaced by a dump of the environment.
	s = strings.Replace(s, "exec /bin/bash "+ControlDir+"/script.sh", `printf '%s\n%s\n%s' "$PWD" "$PATH" "$ODD"`, 1)
	out, err := exec.Command("bash", "-c", s).Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	want := dir + "\n/custom\n" + o.Env["ODD"]
	if string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	cfg := controlConfig(Options{Dir: "/a b/'c'", Hostname: "h", Link: &Link{Addr: "fe80::a"}}, "n0nce")
	out, err = exec.Command("bash", "-c", cfg+`printf '%s|%s|%s|%s' "$TESTBED_NONCE" "$TESTBED_DIR" "$TESTBED_HOSTNAME" "$TESTBED_LINK_ADDR"`).Output()
	if err != nil || string(out) != "n0nce|/a b/'c'|h|fe80::a" {
		t.Errorf("config: %q %v\n%s", out, err, cfg)
	}
}

func TestShellJoin(t *testing.T) {
	got := ShellJoin([]string{"bin/ftvm", "run", "--bare", "hello", "a b", "", "it's"})
	want := `bin/ftvm run --bare hello 'a b' '' 'it'\''s'`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestCacheKey(t *testing.T) {
	mods := [][2]string{{"kvm.ko", "aa"}, {"kvm-amd.ko", "bb"}}
	base := cacheManifest("6.1.0-1-amd64", "k", "b", mods, []byte("init"))
	key := cacheKey(base)
	if len(key) != 20 || key != cacheKey(cacheManifest("6.1.0-1-amd64", "k", "b", mods, []byte("init"))) {
		t.Fatalf("key %q not stable", key)
	}
	for name, m := range map[string]string{
		"kernel version": cacheManifest("6.1.0-2-amd64", "k", "b", mods, []byte("init")),
		"kernel image":   cacheManifest("6.1.0-1-amd64", "k2", "b", mods, []byte("init")),
		"busybox":        cacheManifest("6.1.0-1-amd64", "k", "b2", mods, []byte("init")),
		"module order":   cacheManifest("6.1.0-1-amd64", "k", "b", [][2]string{mods[1], mods[0]}, []byte("init")),
		"module content": cacheManifest("6.1.0-1-amd64", "k", "b", [][2]string{mods[0], {"kvm-amd.ko", "cc"}}, []byte("init")),
		"init":           cacheManifest("6.1.0-1-amd64", "k", "b", mods, []byte("init2")),
	} {
		if cacheKey(m) == key {
			t.Errorf("changing the %s keeps the key", name)
		}
	}
}

func TestCacheRoot(t *testing.T) {
	t.Setenv("FTKVM_CACHE", "/x/y")
	if r, _ := cacheRoot(); r != "/x/y" {
		t.Errorf("FTKVM_CACHE: %s", r)
	}
	t.Setenv("FTKVM_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if r, _ := cacheRoot(); r != "/xdg/ftkvm" {
		t.Errorf("XDG_CACHE_HOME: %s", r)
	}
}

func TestParseShowDepends(t *testing.T) {
	out := "insmod /m/irqbypass.ko \ninsmod /m/kvm.ko \ninsmod /m/kvm-amd.ko nested=1\n" +
		"builtin crc32c\ninsmod /m/virtio.ko \ninsmod /m/kvm.ko \ninsmod /m/virtio_net.ko\n"
	want := []string{"/m/irqbypass.ko", "/m/kvm.ko", "/m/kvm-amd.ko", "/m/virtio.ko", "/m/virtio_net.ko"}
	if got := parseShowDepends(out); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestVersionLess(t *testing.T) {
	vs := []string{"6.1.0-10-amd64", "6.1.0-9-amd64", "5.10.0-30-amd64", "6.1.0-10-cloud-amd64", "6.10.0-1-amd64"}
	slices.SortFunc(vs, func(a, b string) int {
		if versionLess(a, b) {
			return -1
		}
		if versionLess(b, a) {
			return 1
		}
		return 0
	})
	want := []string{"5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-10-cloud-amd64", "6.10.0-1-amd64"}
	if !reflect.DeepEqual(vs, want) {
		t.Errorf("got %q, want %q", vs, want)
	}
}

func TestProcNetTCP(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:15B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:15B4 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
`
	if !procNetTCPListening(table, 0x15B3) {
		t.Error("listening port not found")
	}
	if procNetTCPListening(table, 0x15B4) {
		t.Error("established socket taken for a listening one")
	}
}

// The newc archive the kernel unpacks: header fields, padding, trailer.
func TestCPIO(t *testing.T) {
	var w cpioWriter
	w.dir("bin")
	w.charDev("dev/console", 0o600, 5, 1)
	w.file("init", 0o755, []byte("#!/bin/sh\n"))
	b := w.finish()
	if len(b)%4 != 0 {
		t.Errorf("length %d not 4-aligned", len(b))
	}
	type ent struct {
		name       string
		mode, size uint64
		rmaj, rmin uint64
		data       string
	}
	var got []ent
	for len(b) > 0 {
		if string(b[:6]) != "070701" {
			t.Fatalf("bad magic %q", b[:6])
		}
		field := func(i int) uint64 {
			var v uint64
			for _, c := range b[6+8*i : 14+8*i] {
				v = v<<4 | uint64(strings.IndexByte("0123456789ABCDEF", c))
			}
			return v
		}
		nameLen, size := int(field(11)), int(field(6))
		name := string(b[110 : 110+nameLen-1])
		off := align4(110 + nameLen)
		got = append(got, ent{name, field(1), uint64(size), field(9), field(10), string(b[off : off+size])})
		b = b[align4(off+size):]
	}
	want := []ent{
		{"bin", 0o040755, 0, 0, 0, ""},
		{"dev/console", 0o020600, 0, 5, 1, ""},
		{"init", 0o100755, 10, 0, 0, "#!/bin/sh\n"},
		{"TRAILER!!!", 0, 0, 0, 0, ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestBzPayloadAndPVHNote(t *testing.T) {
	if _, err := bzPayload([]byte("not a kernel")); err == nil {
		t.Error("garbage accepted as a bzImage")
	}
	// A synthetic bzImage: one setup sector plus the boot sector, payload
	// at 0x10 into the protected-mode part.
	bz := make([]byte, 3*512)
	bz[0x1f1] = 1
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(bz[0x248:], 0x10)
	binary.LittleEndian.PutUint32(bz[0x24c:], 6)
	copy(bz[1024+0x10:], "\xfd7zXZ\x00")
	p, err := bzPayload(bz)
	if err != nil || string(p) != "\xfd7zXZ\x00" {
		t.Errorf("payload %q, %v", p, err)
	}
	if err := checkPVHElf([]byte("\x7fELF")); err == nil {
		t.Error("a truncated ELF passed")
	}
}

// The real kernel of this machine, if there is one: its PVH ELF comes out.
func TestExtractHostKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	kver, err := hostKernel()
	if err != nil {
		t.Skip("no Debian kernel here")
	}
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("no xz")
	}
	bz, err := os.ReadFile("/boot/vmlinuz-" + kver)
	if err != nil {
		t.Skip(err)
	}
	elf, err := extractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes compressed, %d as PVH ELF", kver, len(bz), len(elf))
}

func TestConsole(t *testing.T) {
	var live bytes.Buffer
	started := 0
	c := newConsole("N1", &live, func() { started++ })
	feed := "\x1bc\x1b[?7l\x1b[2JSeaBIOS (version x)\r\n" +
		"FTKVM-TESTBED-ERROR not really\r\n" + // before START: the init's
		"Booting from ROM..FTKVM-TESTBED-START\n" +
		"line one\n" +
		"FTKVM-TESTBED-EXIT 0 0\n" + // wrong nonce: the script's output
		"FTKVM-TESTBED-START\n" +
		"no newline at the end" + "FTKVM-TESTBED-EXIT N1 3\n" +
		"[    4.1] reboot: Power down\r\n"
	// Byte by byte: lines split across reads.
	for i := 0; i < len(feed); i++ {
		c.Write([]byte{feed[i]})
	}
	c.flush()
	started2, exited, status, errs := c.state()
	if !started2 || !exited || status != 3 || started != 1 {
		t.Errorf("started %v (%d callbacks), exited %v, status %d", started2, started, exited, status)
	}
	if !reflect.DeepEqual(errs, []string{"not really"}) {
		t.Errorf("errs %q", errs)
	}
	want := "line one\nFTKVM-TESTBED-EXIT 0 0\nFTKVM-TESTBED-START\nno newline at the end"
	if got := c.scriptOutput(); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if live.String() != want {
		t.Errorf("live %q, want %q", live.String(), want)
	}
	if d := c.diagnostics(); !strings.Contains(d, "no newline") {
		t.Errorf("diagnostics %q", d)
	}

	// Before START the diagnostics are the cleaned boot log.
	c = newConsole("N", nil, nil)
	c.Write([]byte("\x1b[2JSeaBIOS\r\n\r\n[ 1.0] Kernel panic - not syncing\r\npartial"))
	c.flush()
	if d := c.diagnostics(); d != "SeaBIOS\n[ 1.0] Kernel panic - not syncing\npartial" {
		t.Errorf("boot diagnostics %q", d)
	}
}

func TestTail(t *testing.T) {
	if got := tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("tail: %q", got)
	}
}

// bootTest skips unless FTKVM_TESTBED_BOOT=1: a boot takes seconds to
// minutes of wall time under TCG.
func bootTest(t *testing.T) {
	t.Helper()
	if os.Getenv("FTKVM_TESTBED_BOOT") != "1" {
		t.Skip("boots an emulated host (slow): set FTKVM_TESTBED_BOOT=1")
	}
	if err := Available(); err != nil {
		t.Fatal(err)
	}
}

func TestBoot(t *testing.T) {
	bootTest(t)
	dir := t.TempDir()
	var live bytes.Buffer
	res, err := Run(t.Context(), Options{
		Script: `set -e
test -c /dev/kvm
echo "kvm ok"
echo "$GREETING from $(pwd)"
echo written-inside > inside.txt       # the shared Dir: comes back
echo scratch > /etc/ftkvm-testbed-scratch  # the overlay: stays inside
ip -o link show lo | grep -q UP
go version >/dev/null
echo "stderr line" >&2
exit 7`,
		Dir:     dir,
		Env:     map[string]string{"GREETING": "hello"},
		Timeout: 3 * time.Minute,
		Console: &live,
		MemMB:   1024,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %v, total %v", res.Boot, res.Elapsed)
	if res.ExitStatus != 7 {
		t.Errorf("exit status %d, want 7; output:\n%s", res.ExitStatus, res.Output)
	}
	want := "kvm ok\nhello from " + dir + "\nstderr line\n"
	if res.Output != want || live.String() != want {
		t.Errorf("output %q (live %q), want %q", res.Output, live.String(), want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "inside.txt")); err != nil || string(b) != "written-inside\n" {
		t.Errorf("shared Dir: %q %v", b, err)
	}
	if _, err := os.Stat("/etc/ftkvm-testbed-scratch"); err == nil {
		t.Error("a write outside Dir reached this machine")
	}

	// The timeout kills the host and says so.
	_, err = Run(t.Context(), Options{Script: "echo before; sleep 600", Timeout: 20 * time.Second, MemMB: 512})
	if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "before") {
		t.Errorf("timeout: %v", err)
	}
}

// Two hosts on a private link: they ping each other over IPv6 link-local,
// then one dies silently.
func TestTwoHosts(t *testing.T) {
	bootTest(t)
	dir := t.TempDir()
	port := 20000 + os.Getpid()%20000
	a, err := Start(t.Context(), Options{
		Script:  `while [ ! -e done ]; do sleep 0.2; done; echo a-saw-done; sleep 600`,
		Dir:     dir,
		Link:    &Link{Port: port, Listen: true, Addr: "fe80::a"},
		MemMB:   512,
		Timeout: 4 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Start(t.Context(), Options{
		Script:  `busybox ping6 -c 3 -I eth0 fe80::a; rc=$?; touch done; exit $rc`,
		Dir:     dir,
		Link:    &Link{Port: port, Addr: "fe80::b"},
		MemMB:   512,
		Timeout: 4 * time.Minute,
	})
	if err != nil {
		a.Kill()
		t.Fatal(err)
	}
	res, err := b.Wait()
	if err != nil || res.ExitStatus != 0 {
		t.Errorf("ping from b: %v, status %d:\n%s", err, res.ExitStatus, res.Output)
	}
	t.Logf("b: boot %v, total %v\n%s", res.Boot, res.Elapsed, res.Output)
	time.Sleep(3 * time.Second) // a polls for "done" every 0.2 s
	a.Kill()
	res, err = a.Wait()
	if !errors.Is(err, ErrKilled) {
		t.Errorf("a after Kill: %v", err)
	}
	if !strings.Contains(res.Output, "a-saw-done") {
		t.Errorf("a's output: %q", res.Output)
	}
}

// A host whose vCPU stops for good (here: paused through the monitor) is
// declared frozen and killed, with its registers in the error.
func TestStall(t *testing.T) {
	bootTest(t)
	h, err := Start(t.Context(), Options{
		Script:       "echo up; sleep 600",
		MemMB:        512,
		Timeout:      3 * time.Minute,
		StallTimeout: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.ScriptStarted():
	case <-h.Done():
		t.Fatal(h.Wait())
	}
	h.monitor("stop")
	_, err = h.Wait()
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "RIP=") {
		t.Fatalf("got %v, want ErrStalled with registers", err)
	}
	t.Log(err)
}
