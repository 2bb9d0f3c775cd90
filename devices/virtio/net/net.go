package net

import (
	"encoding/binary"
	"fmt"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// DeviceID is virtio-net's device type.
const DeviceID = 1

// Queue indices: receiveq1 and transmitq1 (no VIRTIO_NET_F_MQ, no control
// queue).
const (
	RxQueue = 0
	TxQueue = 1
)

// Feature bits (virtio 1.1, 5.1.3) the device offers.
const (
	FeatureMTU    = 1 << 3  // config mtu: the largest frame the device takes
	FeatureMAC    = 1 << 5  // config mac
	FeatureStatus = 1 << 16 // config status: the link state
)

// StatusLinkUp is the config status field's link bit (VIRTIO_NET_S_LINK_UP).
const StatusLinkUp = 1

// Header fields the device looks at (struct virtio_net_hdr).
const (
	// HeaderLen is struct virtio_net_hdr with VIRTIO_F_VERSION_1: flags
	// u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16,
	// csum_offset u16, num_buffers u16, little-endian. It precedes every
	// frame on both queues.
	HeaderLen = 12

	hdrFlags      = 0
	hdrGSOType    = 1
	hdrNumBuffers = 10
)

// Limits the device advertises and enforces.
const (
	// QueueMax is each queue's QueueNumMax.
	QueueMax = 256
	// MTU is the config space's mtu (with VIRTIO_NET_F_MTU, so a Linux
	// driver refuses a larger MTU instead of sending frames the device
	// drops).
	MTU = 1500
	// MinFrame and MaxFrame bound an Ethernet frame without its FCS: the
	// 14-byte header, and MTU bytes of payload plus an 802.1Q tag. A
	// Linux driver without VIRTIO_NET_F_MRG_RXBUF or guest offloads posts
	// receive buffers of HeaderLen+MaxFrame bytes (GOOD_PACKET_LEN).
	MinFrame = 14
	MaxFrame = 14 + 4 + MTU
	// MaxTxInFlight bounds the transmitted frames handed to the engine
	// and not yet seen completed; further frames stay in the transmit
	// ring until a completion frees room. It bounds the host memory a
	// guest can pin (MaxTxInFlight*MaxFrame bytes) while the VMM holds
	// output for its commit.
	MaxTxInFlight = 64
	// RxBatchMax bounds the frames one receive delivers: the standing
	// receive asks for as many as the guest has receive buffers
	// available, 1..RxBatchMax.
	RxBatchMax = 32
)

// Config describes one network interface.
type Config struct {
	// MAC is the guest's Ethernet address (config mac): unicast, not
	// all zero.
	MAC [6]byte
	// TagBase: the device numbers its bounce requests TagBase+1,
	// TagBase+2, ... A VMM whose devices share one engine gives each a
	// range of its own (vmm.VM.AddBounceDevice).
	TagBase uint64
}

func (c Config) validate() error {
	switch {
	case c.MAC[0]&1 != 0:
		return fmt.Errorf("net: MAC %s is a multicast address", formatMAC(c.MAC))
	case c.MAC == [6]byte{}:
		return fmt.Errorf("net: MAC is all zero")
	}
	return nil
}

func formatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// Stats counts what happened to frames. The counters are device state:
// they follow from the guest's actions and the logged completions, so a
// replaying backup counts the same.
type Stats struct {
	TxFrames    uint64 // frames handed to the engine
	TxDropped   uint64 // transmit chains refused (see the package documentation)
	TxErrors    uint64 // transmit completions with a backend error
	RxFrames    uint64 // frames written into guest buffers
	RxNoBuffer  uint64 // frames dropped: no receive buffer posted, or the device not running
	RxBadBuffer uint64 // frames dropped: the receive buffer was malformed or too small
	RxErrors    uint64 // receive completions with a backend error, or a frame of a bad length
}

// Device is a virtio-net device model: a virtio.Backend with a receive
// and a transmit queue, whose frames go through a bounce.Engine. See the
// package documentation for the paths and the caller's duties.
type Device struct {
	cfg    Config
	engine *bounce.Engine
	m      *virtio.MMIO

	nextTag uint64
	// rxTag is the standing receive's tag, 0 if none is in flight. A
	// reset cannot cancel it, so it may be one the old driver armed.
	rxTag uint64
	// rxBatch is the most frames the standing receive asked for.
	rxBatch int
	// rxArmed: the driver has notified since the last reset, so the
	// device keeps a receive standing (until a receive error).
	rxArmed bool
	tx      map[uint64][]byte // transmit writes in flight: tag -> frame
	stats   Stats
}

var (
	_ virtio.Device   = (*Device)(nil)
	_ virtio.Stateful = (*Device)(nil)
)

// New returns the device for cfg, submitting its transfers to engine,
// whose backend must serve Requests as described in the package
// documentation (Endpoint and Tap do). The engine should serve this
// device alone: the device's tags are its own.
func New(cfg Config, engine *bounce.Engine) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if engine == nil {
		return nil, fmt.Errorf("net: no bounce engine")
	}
	return &Device{cfg: cfg, engine: engine, nextTag: cfg.TagBase + 1, tx: map[uint64][]byte{}}, nil
}

// NewMMIO is New followed by virtio.Attach: the device and its transport,
// ready to map.
func NewMMIO(cfg Config, engine *bounce.Engine, mem virtio.Memory, irq func(high bool)) (*Device, *virtio.MMIO, error) {
	d, err := New(cfg, engine)
	if err != nil {
		return nil, nil, err
	}
	m, err := virtio.Attach(d, mem, irq)
	if err != nil {
		return nil, nil, err
	}
	return d, m, nil
}

// Attach tells the device which transport it sits behind, so that Complete
// can reach its queues. Call it once, after virtio.NewMMIO(d, ...).
func (d *Device) Attach(m *virtio.MMIO) { d.m = m }

// Attachment describes an interface for a VMM to add (vmm.VM.AddVirtio):
// the guest's eth0 for the first one, whose frames backend carries (Tap,
// or an Endpoint of a Link). The VMM sets cfg.TagBase; the log header
// pins the MAC.
func Attachment(cfg Config, backend bounce.Backend) virtio.Attachment {
	return virtio.Attachment{
		Kind:     "virtio-net",
		Identity: "mac=" + formatMAC(cfg.MAC),
		Backend:  backend,
		New: func(e *bounce.Engine, tagBase uint64) (virtio.Device, error) {
			cfg.TagBase = tagBase
			return New(cfg, e)
		},
	}
}

// Engine returns the device's bounce engine.
func (d *Device) Engine() *bounce.Engine { return d.engine }

// Config returns the device's configuration.
func (d *Device) Config() Config { return d.cfg }

// Stats returns the device's counters.
func (d *Device) Stats() Stats { return d.stats }

// InFlight returns the number of transmitted frames in flight and whether
// a receive is standing.
func (d *Device) InFlight() (tx int, receiving bool) { return len(d.tx), d.rxTag != 0 }

// DeviceID implements virtio.Backend.
func (d *Device) DeviceID() uint32 { return DeviceID }

// Features implements virtio.Backend: no checksum or segmentation offload,
// no mergeable receive buffers, no control queue (see the package
// documentation).
func (d *Device) Features() uint64 { return FeatureMTU | FeatureMAC | FeatureStatus }

// NumQueues implements virtio.Backend.
func (d *Device) NumQueues() int { return 2 }

// QueueMax implements virtio.Backend.
func (d *Device) QueueMax(int) uint16 { return QueueMax }

// Config space layout (virtio 1.1, 5.1.4), little-endian.
const (
	cfgMAC       = 0  // [6]u8
	cfgStatus    = 6  // u16
	cfgMaxQPairs = 8  // u16: only with VIRTIO_NET_F_MQ, 0
	cfgMTU       = 10 // u16
	cfgLen       = 12
)

// ReadConfig implements virtio.Backend.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var c [cfgLen]byte
	copy(c[cfgMAC:], d.cfg.MAC[:])
	binary.LittleEndian.PutUint16(c[cfgStatus:], StatusLinkUp)
	binary.LittleEndian.PutUint16(c[cfgMTU:], MTU)
	if off < cfgLen {
		copy(data, c[off:])
	}
}

// WriteConfig implements virtio.Backend: the config space is read-only
// for a VERSION_1 driver (the MAC is writable only through the control
// queue, which is not offered), so writes are ignored.
func (d *Device) WriteConfig(uint64, []byte) {}

// Reset implements virtio.Backend. Transmitted frames in flight stay in
// flight (they are the guest's output, already taken from its memory: the
// completion only frees room), and so does the standing receive, which the
// engine cannot cancel: it remains the one receive in flight and its
// packet goes to whatever driver is running when it arrives. The device
// stops re-arming the receive until the driver notifies again. Tags keep
// counting across resets.
func (d *Device) Reset() { d.rxArmed = false }
