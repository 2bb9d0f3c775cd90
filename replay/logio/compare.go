package logio

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// CompareHeaders checks that the VM about to replay (running) is configured
// as the one that recorded the log (recorded). It returns nil if so, and
// otherwise a *ConfigMismatchError (errors.Is ErrConfigMismatch) naming
// every field that differs, the log's value first. Recorder is free text
// and is not compared.
func CompareHeaders(recorded, running *logpb.Header) error {
	var diffs []string
	add := func(format string, a ...any) { diffs = append(diffs, fmt.Sprintf(format, a...)) }
	hash := func(what string, a, b []byte) {
		if !bytes.Equal(a, b) {
			x, y := shortHashes(a, b)
			add("different %s (sha256 %s vs %s)", what, x, y)
		}
	}

	if a, b := recorded.GetVersion(), running.GetVersion(); a != b {
		add("header version %d vs %d", a, b)
	}
	hash("CPUID table", recorded.GetCpuidSha256(), running.GetCpuidSha256())
	if a, b := recorded.GetMemoryBytes(), running.GetMemoryBytes(); a != b {
		add("memory %s vs %s", sizeString(a), sizeString(b))
	}
	hash("kernel", recorded.GetKernelSha256(), running.GetKernelSha256())
	hash("initrd", recorded.GetInitrdSha256(), running.GetInitrdSha256())
	if a, b := recorded.GetCmdline(), running.GetCmdline(); a != b {
		add("command line %q vs %q", a, b)
	}
	hash("guest image", recorded.GetImageSha256(), running.GetImageSha256())
	if a, b := recorded.GetEpochUnixNano(), running.GetEpochUnixNano(); a != b {
		add("RTC epoch %s vs %s", epochString(a), epochString(b))
	}
	if a, b := recorded.GetVerify(), running.GetVerify(); a != b {
		add("read verification %s vs %s", onOff(a), onOff(b))
	}
	if a, b := recorded.GetRdtscSites(), running.GetRdtscSites(); a != b {
		add("%d patched rdtsc sites vs %d", a, b)
	}
	if a, b := recorded.GetLandmarks(), running.GetLandmarks(); a != b {
		add("landmark strategy %s vs %s", orNone(a), orNone(b))
	}
	if a, b := recorded.GetFingerprint(), running.GetFingerprint(); a != b {
		add("fingerprint scheme %s vs %s", orNone(a), orNone(b))
	}
	if a, b := devicesString(recorded.GetDevices()), devicesString(running.GetDevices()); a != b {
		add("extra devices %s vs %s", a, b)
	}
	if diffs == nil {
		return nil
	}
	return &ConfigMismatchError{Diffs: diffs}
}

// devicesString lists extra devices for people: "none" or "a, b".
func devicesString(d []string) string {
	if len(d) == 0 {
		return "none"
	}
	return strings.Join(d, ", ")
}

// shortHashes abbreviates two different hashes for people: 12 hex digits,
// or as many more as it takes to tell them apart. An empty hash is "none".
func shortHashes(a, b []byte) (string, string) {
	x, y := hex.EncodeToString(a), hex.EncodeToString(b)
	n := 12
	for n < len(x) && n < len(y) && x[:n] == y[:n] {
		n += 4
	}
	return shortHex(x, n), shortHex(y, n)
}

func shortHex(s string, n int) string {
	switch {
	case s == "":
		return "none"
	case len(s) <= n:
		return s
	}
	return s[:n] + "…"
}

// sizeString formats a memory size: "128 MiB" when a whole number of MiB,
// bytes otherwise.
func sizeString(n uint64) string {
	if n != 0 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// epochString formats a Header.EpochUnixNano as RFC 3339 in UTC.
func epochString(unixNano int64) string {
	return time.Unix(0, unixNano).UTC().Format(time.RFC3339Nano)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
