package blk

import (
	"encoding/binary"
	"fmt"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// DeviceID is virtio-blk's device type.
const DeviceID = 2

// SectorSize is the unit of the request header's sector field and of the
// capacity in config space, whatever the disk's block size.
const SectorSize = 512

// Request types (virtio 1.1, 5.2.6). Other types complete with
// StatusUnsupp.
const (
	TypeIn    = 0 // read
	TypeOut   = 1 // write
	TypeFlush = 4
	TypeGetID = 8
)

// Request status values, the last byte the device writes.
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// Feature bits (virtio 1.1, 5.2.3).
const (
	FeatureSizeMax = 1 << 1
	FeatureSegMax  = 1 << 2
	FeatureRO      = 1 << 5
	FeatureBlkSize = 1 << 6
	FeatureFlush   = 1 << 9
)

// Limits the device advertises and enforces.
const (
	// QueueMax is the request queue's QueueNumMax.
	QueueMax = 256
	// SizeMax and SegMax are the config space's size_max and seg_max:
	// a driver builds a request from at most SegMax data segments of at
	// most SizeMax bytes each, so its data stays under MaxDataLen, and
	// with the header and status the chain fits a full queue without
	// indirect descriptors (which the transport does not offer).
	SizeMax = 4096
	SegMax  = QueueMax - 2
	// MaxDataLen bounds one request's data: the most a bounce transfer
	// carries. A longer request completes with StatusIOErr.
	MaxDataLen = bounce.MaxLen
	// MaxInFlight bounds the transfers the device has submitted and not
	// seen completed, including those a reset orphaned; further requests
	// wait their turn. It bounds the host memory a guest can pin.
	MaxInFlight = 64
	// IDLen is the length of the GET_ID answer: the ID, NUL-padded.
	IDLen = 20
	// headerLen is the request header: type u32, reserved u32, sector u64.
	headerLen = 16
	// MaxCapacity bounds Config.Capacity, keeping offsets far from
	// overflow.
	MaxCapacity = 1 << 60
)

// Config describes one disk.
type Config struct {
	// Capacity is the disk's size in bytes: a multiple of SectorSize,
	// at most MaxCapacity. Zero is an empty disk (every read and write
	// fails).
	Capacity uint64
	// ReadOnly offers VIRTIO_BLK_F_RO: writes complete with
	// StatusIOErr and never reach the backend. Flushes succeed.
	ReadOnly bool
	// ID is the GET_ID answer, at most IDLen bytes (NUL-padded).
	ID string
	// TagBase: the device numbers its bounce requests TagBase+1,
	// TagBase+2, ... A VMM whose devices share one engine gives each a
	// range of its own (vmm.VM.AddBounceDevice).
	TagBase uint64
}

func (c Config) validate() error {
	switch {
	case c.Capacity%SectorSize != 0:
		return fmt.Errorf("blk: capacity %d is not a multiple of %d", c.Capacity, SectorSize)
	case c.Capacity > MaxCapacity:
		return fmt.Errorf("blk: capacity %d is more than %d", c.Capacity, uint64(MaxCapacity))
	case len(c.ID) > IDLen:
		return fmt.Errorf("blk: ID %q is longer than %d bytes", c.ID, IDLen)
	}
	return nil
}

// Device is a virtio-blk device model: a virtio.Backend with one request
// queue, whose reads and writes go through a bounce.Engine. See the
// package documentation for the request path and the caller's duties.
type Device struct {
	cfg    Config
	engine *bounce.Engine
	vq     *virtio.Queue

	nextTag  uint64
	inflight map[uint64]*Request // submitted to the engine, by tag
	waiting  []*Request          // parsed, not submitted, in guest order
}

var (
	_ virtio.Device   = (*Device)(nil)
	_ virtio.Stateful = (*Device)(nil)
)

// New returns the device for cfg, submitting its transfers to engine,
// whose backend must serve Requests as described in the package
// documentation (FileBackend does).
func New(cfg Config, engine *bounce.Engine) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if engine == nil {
		return nil, fmt.Errorf("blk: no bounce engine")
	}
	return &Device{cfg: cfg, engine: engine, nextTag: cfg.TagBase + 1, inflight: map[uint64]*Request{}}, nil
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
// can reach the queue. Call it once, after virtio.NewMMIO(d, ...).
func (d *Device) Attach(m *virtio.MMIO) { d.vq = m.Queue(0) }

// DiskOptions are a disk's choices for a VMM beyond its Config.
type DiskOptions struct {
	// Identity names the disk's content for the log header, which a
	// replay or an FT backup must match: the image's size and hash, or a
	// generation the user sets for a large image.
	Identity string
	// OwnCopy: this host has its own copy of the disk (FT's non-shared
	// mode), so a replaying VM (a backup) performs the guest's writes on
	// it, in order, while its reads still come from the log. Without it a
	// replay writes nothing: the primary's writes reach the one shared
	// image.
	OwnCopy bool
}

// Attachment describes a disk for a VMM to add (vmm.VM.AddVirtio): the
// guest's /dev/vda for the first one, whose transfers backend serves
// (FileBackend.Backend for a raw image). The VMM sets cfg.TagBase.
func Attachment(cfg Config, backend bounce.Backend, opt DiskOptions) virtio.Attachment {
	return virtio.Attachment{
		Kind:         "virtio-blk",
		Identity:     opt.Identity,
		Backend:      backend,
		ReplayWrites: opt.OwnCopy,
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

// InFlight returns the number of transfers submitted and not completed,
// and the number of requests waiting for an overlapping one.
func (d *Device) InFlight() (submitted, waiting int) { return len(d.inflight), len(d.waiting) }

// DeviceID implements virtio.Backend.
func (d *Device) DeviceID() uint32 { return DeviceID }

// Features implements virtio.Backend.
func (d *Device) Features() uint64 {
	f := uint64(FeatureSizeMax | FeatureSegMax | FeatureBlkSize | FeatureFlush)
	if d.cfg.ReadOnly {
		f |= FeatureRO
	}
	return f
}

// NumQueues implements virtio.Backend.
func (d *Device) NumQueues() int { return 1 }

// QueueMax implements virtio.Backend.
func (d *Device) QueueMax(int) uint16 { return QueueMax }

// Config space layout (virtio 1.1, 5.2.4), little-endian.
const (
	cfgCapacity = 0  // u64, in 512-byte sectors
	cfgSizeMax  = 8  // u32
	cfgSegMax   = 12 // u32
	cfgGeometry = 16 // u16 cylinders, u8 heads, u8 sectors: not offered, 0
	cfgBlkSize  = 20 // u32
	cfgLen      = 24
)

// ReadConfig implements virtio.Backend.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var c [cfgLen]byte
	binary.LittleEndian.PutUint64(c[cfgCapacity:], d.cfg.Capacity/SectorSize)
	binary.LittleEndian.PutUint32(c[cfgSizeMax:], SizeMax)
	binary.LittleEndian.PutUint32(c[cfgSegMax:], SegMax)
	binary.LittleEndian.PutUint32(c[cfgBlkSize:], SectorSize)
	if off < cfgLen {
		copy(data, c[off:])
	}
}

// WriteConfig implements virtio.Backend: the config space is read-only
// (no VIRTIO_BLK_F_CONFIG_WCE), so writes are ignored.
func (d *Device) WriteConfig(uint64, []byte) {}

// Reset implements virtio.Backend. Waiting requests are forgotten: they
// were never submitted. Transfers in flight cannot be cancelled (a backend
// may be inside a pwrite): they stay in the in-flight table, orphaned,
// their chains stale, so that their completions are dropped without
// touching guest memory and new requests overlapping them still wait for
// them (a new write racing an orphaned one on the host disk would leave an
// order the backup cannot reproduce). Tags keep counting across resets, so
// an orphan's tag is never reused.
func (d *Device) Reset() { d.waiting = nil }
