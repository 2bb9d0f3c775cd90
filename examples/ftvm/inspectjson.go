package main

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// inspectJSON is `ftvm inspect --json`'s output: the text's content, with
// whole hashes and numbers rather than rounded ones. Field names are part
// of the CLI contract (docs/cli.md): add fields, never rename them.
type inspectJSON struct {
	File        string        `json:"file"`
	Header      jsonHeader    `json:"header"`
	Complete    bool          `json:"complete"`         // ends with its End event and is undamaged
	Damage      string        `json:"damage,omitempty"` // why reading stopped early
	Events      int           `json:"events"`
	Bytes       int64         `json:"bytes"` // of the intact part: header and events
	HeaderBytes int64         `json:"header_bytes"`
	EventBytes  int64         `json:"event_bytes"`
	FirstExits  uint64        `json:"first_exits"`
	LastExits   uint64        `json:"last_exits"`
	Kinds       []jsonKind    `json:"kinds"`
	End         *jsonEnd      `json:"end"` // null: the recording is incomplete
	Devices     []jsonTraffic `json:"device_traffic"`
	Listed      []jsonEvent   `json:"listed_events,omitempty"` // with --events
}

type jsonHeader struct {
	Version     uint32   `json:"version"`
	MemoryBytes uint64   `json:"memory_bytes"`
	Cmdline     string   `json:"cmdline"`
	Kernel      string   `json:"kernel_sha256"`
	Initrd      string   `json:"initrd_sha256"`
	Image       string   `json:"image_sha256"`
	CPUID       string   `json:"cpuid_sha256"`
	Devices     []string `json:"devices"`
	Verify      bool     `json:"verify"`
	RDTSCSites  uint32   `json:"rdtsc_sites"`
	Landmarks   string   `json:"landmarks"`
	Fingerprint string   `json:"fingerprint"`
	Recorder    string   `json:"recorder"`
	Epoch       string   `json:"epoch"` // RFC 3339, UTC
}

type jsonKind struct {
	Kind   string `json:"kind"`
	Events int    `json:"events"`
	Bytes  int64  `json:"bytes"`
}

type jsonEnd struct {
	Reason      string `json:"reason"`
	Status      uint32 `json:"status"`
	Fingerprint string `json:"fingerprint_sha256"`
	Error       string `json:"error,omitempty"`
}

type jsonTraffic struct {
	Slot        uint64 `json:"slot"`
	Device      string `json:"device"`
	Completions int    `json:"completions"`
	WithData    int    `json:"completions_with_data"`
	Bytes       int64  `json:"bytes"`
	Errors      int    `json:"errors"`
	Submits     int    `json:"writes_submitted"`
	SubmitBytes int64  `json:"write_bytes"`
}

type jsonEvent struct {
	Seq   uint64 `json:"seq"`
	Exits uint64 `json:"exits"`
	Event string `json:"event"` // as the text shows it
}

func writeJSON(w io.Writer, name string, h *logpb.Header, s *logio.Summary, headerBytes int64, dma deviceTraffic, listed []jsonEvent, damage error) error {
	out := inspectJSON{
		File: name,
		Header: jsonHeader{
			Version: h.GetVersion(), MemoryBytes: h.GetMemoryBytes(), Cmdline: h.GetCmdline(),
			Kernel: hex.EncodeToString(h.GetKernelSha256()), Initrd: hex.EncodeToString(h.GetInitrdSha256()),
			Image: hex.EncodeToString(h.GetImageSha256()), CPUID: hex.EncodeToString(h.GetCpuidSha256()),
			Devices: append([]string{}, h.GetDevices()...), Verify: h.GetVerify(), RDTSCSites: h.GetRdtscSites(),
			Landmarks: h.GetLandmarks(), Fingerprint: h.GetFingerprint(), Recorder: h.GetRecorder(),
			Epoch: time.Unix(0, h.GetEpochUnixNano()).UTC().Format(time.RFC3339Nano),
		},
		Complete: damage == nil && s.End != nil,
		Events:   s.Events, Bytes: s.Bytes, HeaderBytes: headerBytes, EventBytes: s.EventBytes,
		FirstExits: s.FirstExits, LastExits: s.LastExits,
		Kinds: []jsonKind{}, Devices: []jsonTraffic{}, Listed: listed,
	}
	if damage != nil {
		out.Damage = damage.Error()
	}
	for k := range logio.NumKinds {
		out.Kinds = append(out.Kinds, jsonKind{Kind: k.String(), Events: s.Kinds[k].Events, Bytes: s.Kinds[k].Bytes})
	}
	if e := s.End; e != nil {
		out.End = &jsonEnd{Reason: vmm.StopReason(e.GetReason()).String(), Status: e.GetStatus(),
			Fingerprint: hex.EncodeToString(e.GetFingerprint().GetSha256()), Error: e.GetError()}
	}
	slots := make([]uint64, 0, len(dma))
	for n := range dma {
		slots = append(slots, n)
	}
	slices.Sort(slots)
	for _, n := range slots {
		st, name := dma[n], "?"
		if devs := h.GetDevices(); n < uint64(len(devs)) {
			name, _, _ = strings.Cut(devs[n], " ")
		}
		out.Devices = append(out.Devices, jsonTraffic{Slot: n, Device: name, Completions: st.completions, WithData: st.withData,
			Bytes: st.bytes, Errors: st.errors, Submits: st.submits, SubmitBytes: st.submitBytes})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
