package logio

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

func TestCompareHeadersEqual(t *testing.T) {
	a, b := testHeader(), testHeader()
	b.Recorder = "another host" // free text, not compared
	if err := CompareHeaders(a, b); err != nil {
		t.Errorf("CompareHeaders = %v, want nil", err)
	}
	if err := CompareHeaders(&logpb.Header{}, nil); err != nil {
		t.Errorf("empty vs nil header: %v, want nil", err)
	}
}

func TestCompareHeadersListsEveryDifference(t *testing.T) {
	rec := testHeader()
	run := proto.Clone(rec).(*logpb.Header)
	run.Version = 2
	run.CpuidSha256 = sum("other cpuid")
	run.MemoryBytes = 64 << 20
	run.KernelSha256 = sum("other kernel")
	run.InitrdSha256 = nil
	run.Cmdline = "console=ttyS0"
	run.ImageSha256 = sum("image")
	run.EpochUnixNano = 0
	run.Verify = false
	run.RdtscSites = 41
	run.Fingerprint = "sha256(all)"

	err := CompareHeaders(rec, run)
	if !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("CompareHeaders = %v, want ErrConfigMismatch", err)
	}
	var me *ConfigMismatchError
	if !errors.As(err, &me) {
		t.Fatalf("err is %T, want *ConfigMismatchError", err)
	}
	want := []string{
		"header version 1 vs 2",
		"different CPUID table (sha256 " + hexPrefix(rec.CpuidSha256) + "… vs " + hexPrefix(run.CpuidSha256) + "…)",
		"memory 128 MiB vs 64 MiB",
		"different kernel (sha256 " + hexPrefix(rec.KernelSha256) + "… vs " + hexPrefix(run.KernelSha256) + "…)",
		"different initrd (sha256 " + hexPrefix(rec.InitrdSha256) + "… vs none)",
		`command line "console=ttyS0 clearcpuid=rdrand" vs "console=ttyS0"`,
		"different guest image (sha256 none vs " + hexPrefix(run.ImageSha256) + "…)",
		"RTC epoch 2023-11-14T22:13:20.123456789Z vs 1970-01-01T00:00:00Z",
		"read verification on vs off",
		"42 patched rdtsc sites vs 41",
		"fingerprint scheme sha256(regs,xxh64/page) vs sha256(all)",
	}
	if strings.Join(me.Diffs, "\n") != strings.Join(want, "\n") {
		t.Errorf("diffs:\n%s\nwant:\n%s", strings.Join(me.Diffs, "\n"), strings.Join(want, "\n"))
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message %q lacks %q", err, w)
		}
	}
}

func TestCompareHeadersOneDifference(t *testing.T) {
	rec, run := testHeader(), testHeader()
	run.MemoryBytes = 64<<20 + 4096
	err := CompareHeaders(rec, run)
	var me *ConfigMismatchError
	if !errors.As(err, &me) || len(me.Diffs) != 1 || me.Diffs[0] != "memory 128 MiB vs 67112960 bytes" {
		t.Errorf("CompareHeaders = %#v", err)
	}
}

func TestShortHashesTellApart(t *testing.T) {
	a := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	b := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 11}
	x, y := shortHashes(a, b)
	if x == y {
		t.Errorf("shortHashes = %s, %s: indistinguishable", x, y)
	}
}

func hexPrefix(b []byte) string {
	const digits = "0123456789abcdef"
	var s []byte
	for _, c := range b[:6] {
		s = append(s, digits[c>>4], digits[c&15])
	}
	return string(s)
}

func TestCompareHeadersExtraDevices(t *testing.T) {
	rec, run := testHeader(), testHeader()
	rec.Devices = []string{"dma-test"}
	err := CompareHeaders(rec, run)
	var me *ConfigMismatchError
	if !errors.As(err, &me) || len(me.Diffs) != 1 || me.Diffs[0] != "extra devices dma-test vs none" {
		t.Errorf("CompareHeaders = %#v", err)
	}
	run.Devices = []string{"dma-test"}
	if err := CompareHeaders(rec, run); err != nil {
		t.Errorf("same devices: %v", err)
	}
}
