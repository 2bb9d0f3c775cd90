package virtio

import (
	"encoding/binary"
	"fmt"

	"github.com/ftkvm/ftkvm/devices"
)

// The transport's register window (virtio 1.1, 4.2.2).
const (
	// WindowSize is the size of the MMIO window a VMM maps for one device.
	WindowSize = 0x200
	// ConfigOffset is where the device-specific configuration space
	// starts in the window; it runs to the window's end.
	ConfigOffset = 0x100
	ConfigSize   = WindowSize - ConfigOffset

	// MagicValue is "virt" in little-endian byte order.
	MagicValue = 0x74726976
	// Version is the MMIO transport version: 2, virtio 1.x ("modern").
	Version = 2
	// VendorID is the ASCII bytes "FTKV" in little-endian order, the way
	// QEMU reports "QEMU" (0x554d4551). Linux does not look at it.
	VendorID = 0x564b5446

	// MaxQueues bounds a backend's NumQueues.
	MaxQueues = 64
)

// Register offsets in the MMIO window (virtio 1.1, 4.2.2), exported for
// drivers and tests.
const (
	RegMagic             = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegConfigGeneration  = 0x0fc
)

// Device status bits (virtio 1.1, 2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 0x40 // set by the device only
	StatusFailed      = 0x80

	statusDriverBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed
)

// InterruptStatus bits.
const (
	InterruptUsedBuffer   = 1
	InterruptConfigChange = 2
)

// Feature bits the transport knows about.
const (
	FeatureIndirectDesc = 1 << 28 // refused: see the package documentation
	FeatureEventIdx     = 1 << 29 // refused
	FeatureVersion1     = 1 << 32 // always offered: the transport is modern only
	FeatureRingPacked   = 1 << 34 // refused

	// transportFeatures are bits 24..40, reserved for the queue and
	// feature negotiation mechanisms; of those the transport offers only
	// VERSION_1, whatever the backend says.
	transportFeatures = (1<<41 - 1) &^ (1<<24 - 1)
)

// Backend is a virtio device model behind the transport (virtio-blk,
// virtio-net...). The transport calls it on the vCPU thread, from inside
// MMIO.Read and MMIO.Write.
type Backend interface {
	// DeviceID is the virtio device type (2 block, 1 network...).
	DeviceID() uint32
	// Features are the device-specific feature bits the device offers.
	// Bits 24..40 are the transport's: the transport clears them and
	// offers VIRTIO_F_VERSION_1.
	Features() uint64
	// NumQueues is the number of virtqueues, 1..MaxQueues.
	NumQueues() int
	// QueueMax is queue q's QueueNumMax, a power of two in
	// 1..MaxQueueSize.
	QueueMax(q int) uint16
	// ReadConfig fills data (1, 2 or 4 bytes, zeroed, naturally aligned
	// at off < ConfigSize) from the device config space; bytes beyond the
	// device's config are left zero. WriteConfig is a driver write there.
	ReadConfig(off uint64, data []byte)
	WriteConfig(off uint64, data []byte)
	// Reset is a device reset (the driver wrote 0 to Status). The
	// transport has already reset its registers and queues; the backend
	// forgets every chain it holds and must drop completions for them
	// still to come (Queue.Valid reports them stale).
	Reset()
	// Notify is the driver's buffer-available notification for queue q,
	// only ever called while the queue is ready and the device has
	// DRIVER_OK and neither NEEDS_RESET nor FAILED. The backend pops what
	// it can serve now.
	Notify(q int, vq *Queue)
}

// MMIO is the virtio-mmio transport (version 2) of one device: a
// devices.Device for a WindowSize window on the MMIO bus. See the package
// documentation for the registers' behaviour.
type MMIO struct {
	backend  Backend
	mem      Memory
	irq      func(high bool)
	deviceID uint32
	features uint64 // offered
	queues   []*Queue

	status            uint32
	deviceFeaturesSel uint32
	driverFeaturesSel uint32
	driverFeatures    uint64
	queueSel          uint32
	interruptStatus   uint32
	configGeneration  uint32
	irqLevel          bool
	fault             string
}

var _ devices.Device = (*MMIO)(nil)

// NewMMIO returns the transport for backend in its reset state. mem is
// guest RAM; irq drives the device's interrupt line: high while
// InterruptStatus is not zero, called only when the level changes. The
// backend's ID, features and queue limits are read once, here.
func NewMMIO(backend Backend, mem Memory, irq func(high bool)) (*MMIO, error) {
	n := backend.NumQueues()
	if n < 1 || n > MaxQueues {
		return nil, fmt.Errorf("virtio: backend has %d queues, want 1..%d", n, MaxQueues)
	}
	m := &MMIO{
		backend:  backend,
		mem:      mem,
		irq:      irq,
		deviceID: backend.DeviceID(),
		features: backend.Features()&^transportFeatures | FeatureVersion1,
		queues:   make([]*Queue, n),
	}
	for i := range m.queues {
		qmax := backend.QueueMax(i)
		if qmax == 0 || qmax > MaxQueueSize || qmax&(qmax-1) != 0 {
			return nil, fmt.Errorf("virtio: backend queue %d has QueueMax %d, want a power of two in 1..%d", i, qmax, MaxQueueSize)
		}
		m.queues[i] = &Queue{t: m, idx: i, max: qmax}
	}
	return m, nil
}

// Queue returns virtqueue i, or nil if there is no such queue.
func (m *MMIO) Queue(i int) *Queue {
	if i < 0 || i >= len(m.queues) {
		return nil
	}
	return m.queues[i]
}

// Status returns the device status register.
func (m *MMIO) Status() uint32 { return m.status }

// Active reports whether the driver has finished setting the device up
// (DRIVER_OK) and neither side has given up on it since.
func (m *MMIO) Active() bool {
	return m.status&(StatusDriverOK|StatusNeedsReset|StatusFailed) == StatusDriverOK
}

// DriverFeatures returns the negotiated feature bits once the device has
// accepted FEATURES_OK, and 0 before.
func (m *MMIO) DriverFeatures() uint64 {
	if m.status&StatusFeaturesOK == 0 {
		return 0
	}
	return m.driverFeatures
}

// Fault says why the device entered DEVICE_NEEDS_RESET, for logs; "" if it
// has not. It is not part of the saved state.
func (m *MMIO) Fault() string { return m.fault }

// ConfigChanged tells the driver that the backend changed its config space
// (a disk resized, a link went down): it bumps ConfigGeneration and raises
// the configuration change interrupt.
func (m *MMIO) ConfigChanged() {
	m.configGeneration++
	m.interrupt(InterruptConfigChange)
}

// Read implements devices.Device.
func (m *MMIO) Read(offset uint64, data []byte) {
	clear(data)
	if off, ok := configAccess(offset, len(data)); ok {
		m.backend.ReadConfig(off, data)
		return
	}
	if offset < ConfigOffset && offset%4 == 0 && len(data) == 4 {
		binary.LittleEndian.PutUint32(data, m.readReg(offset))
	}
}

// Write implements devices.Device.
func (m *MMIO) Write(offset uint64, data []byte) {
	if off, ok := configAccess(offset, len(data)); ok {
		m.backend.WriteConfig(off, data)
		return
	}
	if offset < ConfigOffset && offset%4 == 0 && len(data) == 4 {
		m.writeReg(offset, binary.LittleEndian.Uint32(data))
	}
}

// configAccess returns the config space offset of an access of n bytes at
// window offset offset, if it is one the device config space takes.
func configAccess(offset uint64, n int) (uint64, bool) {
	if offset < ConfigOffset || offset >= WindowSize || (n != 1 && n != 2 && n != 4) {
		return 0, false
	}
	off := offset - ConfigOffset
	if off%uint64(n) != 0 || off+uint64(n) > ConfigSize {
		return 0, false
	}
	return off, true
}

// selected returns the queue QueueSel names, or nil.
func (m *MMIO) selected() *Queue {
	if m.queueSel >= uint32(len(m.queues)) {
		return nil
	}
	return m.queues[m.queueSel]
}

func (m *MMIO) readReg(off uint64) uint32 {
	q := m.selected()
	switch off {
	case RegMagic:
		return MagicValue
	case RegVersion:
		return Version
	case RegDeviceID:
		return m.deviceID
	case RegVendorID:
		return VendorID
	case RegDeviceFeatures:
		switch m.deviceFeaturesSel {
		case 0:
			return uint32(m.features)
		case 1:
			return uint32(m.features >> 32)
		}
	case RegQueueNumMax:
		if q != nil {
			return uint32(q.max)
		}
	case RegQueueReady:
		if q != nil && q.ready {
			return 1
		}
	case RegInterruptStatus:
		return m.interruptStatus
	case RegStatus:
		return m.status
	case RegConfigGeneration:
		return m.configGeneration
	}
	return 0 // write-only and reserved registers
}

func (m *MMIO) writeReg(off uint64, v uint32) {
	switch off {
	case RegDeviceFeaturesSel:
		m.deviceFeaturesSel = v
	case RegDriverFeaturesSel:
		m.driverFeaturesSel = v
	case RegDriverFeatures:
		if m.status&StatusFeaturesOK != 0 {
			return // negotiation is over
		}
		switch m.driverFeaturesSel {
		case 0:
			m.driverFeatures = m.driverFeatures&^0xffffffff | uint64(v)
		case 1:
			m.driverFeatures = m.driverFeatures&0xffffffff | uint64(v)<<32
		}
	case RegQueueSel:
		m.queueSel = v
	case RegQueueNum, RegQueueDescLow, RegQueueDescHigh, RegQueueDriverLow, RegQueueDriverHigh,
		RegQueueDeviceLow, RegQueueDeviceHigh:
		if q := m.selected(); q != nil && !q.ready { // a ready queue's configuration is frozen
			q.writeReg(off, v)
		}
	case RegQueueReady:
		m.writeQueueReady(v)
	case RegQueueNotify:
		m.notify(v)
	case RegInterruptACK:
		m.interruptStatus &^= v
		m.updateIRQ()
	case RegStatus:
		m.writeStatus(v)
	}
}

// writeReg writes one of the queue's configuration registers.
func (q *Queue) writeReg(off uint64, v uint32) {
	setHalf := func(r *uint64, high bool) {
		if high {
			*r = *r&0xffffffff | uint64(v)<<32
		} else {
			*r = *r&^0xffffffff | uint64(v)
		}
	}
	switch off {
	case RegQueueNum:
		q.num = v
	case RegQueueDescLow, RegQueueDescHigh:
		setHalf(&q.desc, off == RegQueueDescHigh)
	case RegQueueDriverLow, RegQueueDriverHigh:
		setHalf(&q.driver, off == RegQueueDriverHigh)
	case RegQueueDeviceLow, RegQueueDeviceHigh:
		setHalf(&q.device, off == RegQueueDeviceHigh)
	}
}

// writeQueueReady: 1 enables the selected queue after validating it (a
// queue that fails stays not ready and the device needs a reset), 0
// disables it (its chains in flight become stale); other values are
// ignored.
func (m *MMIO) writeQueueReady(v uint32) {
	q := m.selected()
	switch {
	case q == nil:
	case v == 0:
		q.disable()
	case v == 1 && !q.ready:
		if reason := q.enable(); reason != "" {
			m.fail(reason)
		}
	}
}

func (m *MMIO) notify(v uint32) {
	if v >= uint32(len(m.queues)) || !m.Active() || !m.queues[v].ready {
		return
	}
	m.backend.Notify(int(v), m.queues[v])
}

// writeStatus follows the status state machine: 0 resets the device;
// otherwise the driver's bits are added (the driver cannot clear bits but
// by a reset, nor set NEEDS_RESET). FEATURES_OK sticks only if the driver's
// features are acceptable, DRIVER_OK only once FEATURES_OK is set.
func (m *MMIO) writeStatus(v uint32) {
	if v == 0 {
		m.reset()
		return
	}
	s := m.status | v&statusDriverBits
	if s&StatusFeaturesOK != 0 && m.status&StatusFeaturesOK == 0 && !m.featuresAcceptable(m.driverFeatures) {
		s &^= StatusFeaturesOK
	}
	if s&StatusFeaturesOK == 0 {
		s &^= StatusDriverOK
	}
	m.status = s
}

// featuresAcceptable: a subset of what the device offers, including
// VERSION_1 (the transport has no legacy interface).
func (m *MMIO) featuresAcceptable(f uint64) bool {
	return f&^m.features == 0 && f&FeatureVersion1 != 0
}

func (m *MMIO) reset() {
	m.status = 0
	m.deviceFeaturesSel, m.driverFeaturesSel = 0, 0
	m.driverFeatures = 0
	m.queueSel = 0
	m.interruptStatus = 0
	m.fault = ""
	for _, q := range m.queues {
		q.reset()
	}
	m.updateIRQ()
	m.backend.Reset()
}

// fail puts the device in DEVICE_NEEDS_RESET (spec 2.1.2): every queue
// stops, and the driver gets a configuration change interrupt.
func (m *MMIO) fail(reason string) {
	if m.status&StatusNeedsReset != 0 {
		return
	}
	m.status |= StatusNeedsReset
	m.fault = reason
	m.interrupt(InterruptConfigChange)
}

func (m *MMIO) interrupt(bits uint32) {
	m.interruptStatus |= bits
	m.updateIRQ()
}

func (m *MMIO) updateIRQ() {
	if level := m.interruptStatus != 0; level != m.irqLevel {
		m.irqLevel = level
		m.irq(level)
	}
}
