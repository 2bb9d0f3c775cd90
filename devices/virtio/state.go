package virtio

import (
	"fmt"
	"slices"
)

// MMIOState is the saved state of a transport and its queues. The
// backend's own state (its config space, the chains it holds) is the
// backend's to save.
type MMIOState struct {
	Status            uint32
	DeviceFeaturesSel uint32
	DriverFeaturesSel uint32
	DriverFeatures    uint64
	QueueSel          uint32
	InterruptStatus   uint32
	ConfigGeneration  uint32
	IRQLevel          bool // level last driven on the interrupt line
	Queues            []QueueState
}

// QueueState is the saved state of one virtqueue.
type QueueState struct {
	Num                  uint32 // QueueNum as written
	Desc, Driver, Device uint64 // ring addresses as written
	Ready                bool
	Epoch                uint32
	NextAvail            uint16     // free-running index of the next available entry to take
	NextUsed             uint16     // used idx last published
	InFlight             []InFlight // chains popped and not pushed, by head
}

// Save returns a copy of the transport's state.
func (m *MMIO) Save() MMIOState {
	s := MMIOState{
		Status:            m.status,
		DeviceFeaturesSel: m.deviceFeaturesSel,
		DriverFeaturesSel: m.driverFeaturesSel,
		DriverFeatures:    m.driverFeatures,
		QueueSel:          m.queueSel,
		InterruptStatus:   m.interruptStatus,
		ConfigGeneration:  m.configGeneration,
		IRQLevel:          m.irqLevel,
		Queues:            make([]QueueState, len(m.queues)),
	}
	for i, q := range m.queues {
		qs := QueueState{
			Num: q.num, Desc: q.desc, Driver: q.driver, Device: q.device,
			Ready: q.ready, Epoch: q.epoch, NextAvail: q.nextAvail, NextUsed: q.nextUsed,
		}
		heads := make([]uint16, 0, len(q.inflight))
		for h := range q.inflight {
			heads = append(heads, h)
		}
		slices.Sort(heads)
		for _, h := range heads {
			e := q.inflight[h]
			qs.InFlight = append(qs.InFlight, InFlight{Descs: slices.Clone(e.Descs), Writable: e.Writable})
		}
		s.Queues[i] = qs
	}
	return s
}

// Restore replaces the transport's state with s after checking it; on
// error the transport is unchanged. It reads no guest memory (a ready
// queue's rings are checked against RAM again on every access) and does
// not drive the interrupt line: the interrupt controller's saved state
// holds its level. The backend is not told; restore it separately.
func (m *MMIO) Restore(s MMIOState) error {
	switch {
	case len(s.Queues) != len(m.queues):
		return fmt.Errorf("virtio: restore: %d queues, the device has %d", len(s.Queues), len(m.queues))
	case s.Status&^(statusDriverBits|StatusNeedsReset) != 0:
		return fmt.Errorf("virtio: restore: status %#x has unknown bits", s.Status)
	case s.Status&StatusFeaturesOK != 0 && !m.featuresAcceptable(s.DriverFeatures):
		return fmt.Errorf("virtio: restore: FEATURES_OK with features %#x the device does not accept (offered %#x)",
			s.DriverFeatures, m.features)
	case s.Status&StatusDriverOK != 0 && s.Status&StatusFeaturesOK == 0:
		return fmt.Errorf("virtio: restore: status %#x has DRIVER_OK without FEATURES_OK", s.Status)
	case s.InterruptStatus&^(InterruptUsedBuffer|InterruptConfigChange) != 0:
		return fmt.Errorf("virtio: restore: interrupt status %#x has unknown bits", s.InterruptStatus)
	case s.IRQLevel != (s.InterruptStatus != 0):
		return fmt.Errorf("virtio: restore: IRQ level %v disagrees with interrupt status %#x", s.IRQLevel, s.InterruptStatus)
	}
	queues := make([]Queue, len(m.queues))
	for i, qs := range s.Queues {
		q, err := m.restoreQueue(i, qs)
		if err != nil {
			return fmt.Errorf("virtio: restore: queue %d: %w", i, err)
		}
		queues[i] = *q
	}
	m.status = s.Status
	m.deviceFeaturesSel, m.driverFeaturesSel = s.DeviceFeaturesSel, s.DriverFeaturesSel
	m.driverFeatures = s.DriverFeatures
	m.queueSel = s.QueueSel
	m.interruptStatus = s.InterruptStatus
	m.configGeneration = s.ConfigGeneration
	m.irqLevel = s.IRQLevel
	for i, q := range m.queues {
		*q = queues[i] // in place: the backend may hold the *Queue
	}
	m.fault = ""
	if s.Status&StatusNeedsReset != 0 {
		m.fault = "restored in DEVICE_NEEDS_RESET"
	}
	return nil
}

// restoreQueue builds queue i from qs, or says why qs is not a state the
// queue can be in.
func (m *MMIO) restoreQueue(i int, qs QueueState) (*Queue, error) {
	old := m.queues[i]
	q := &Queue{
		t: m, idx: i, max: old.max,
		num: qs.Num, desc: qs.Desc, driver: qs.Driver, device: qs.Device,
		epoch: qs.Epoch,
	}
	if !qs.Ready {
		if qs.NextAvail != 0 || qs.NextUsed != 0 || len(qs.InFlight) != 0 {
			return nil, fmt.Errorf("not ready but has ring positions or chains in flight")
		}
		return q, nil
	}
	if qs.Num == 0 || qs.Num > uint32(q.max) || qs.Num&(qs.Num-1) != 0 {
		return nil, fmt.Errorf("ready with size %d, not a power of two in 1..%d", qs.Num, q.max)
	}
	n := uint64(qs.Num)
	for _, a := range []struct{ addr, bytes, align uint64 }{
		{qs.Desc, descSize * n, descAlign},
		{qs.Driver, availBytes(n), availAlign},
		{qs.Device, usedBytes(n), usedAlign},
	} {
		if a.addr%a.align != 0 || a.addr+a.bytes < a.addr {
			return nil, fmt.Errorf("ring at %#x (%#x bytes) is misaligned or wraps", a.addr, a.bytes)
		}
	}
	if len(qs.InFlight) != int(qs.NextAvail-qs.NextUsed) {
		return nil, fmt.Errorf("%d chains in flight, but %d popped and not pushed (next avail %d, used idx %d)",
			len(qs.InFlight), qs.NextAvail-qs.NextUsed, qs.NextAvail, qs.NextUsed)
	}
	q.ready = true
	q.nextAvail, q.nextUsed = qs.NextAvail, qs.NextUsed
	q.owned = make([]bool, n)
	q.inflight = make(map[uint16]InFlight, len(qs.InFlight))
	for _, e := range qs.InFlight {
		if len(e.Descs) == 0 {
			return nil, fmt.Errorf("empty chain in flight")
		}
		if e.Writable > MaxChainBytes {
			return nil, fmt.Errorf("chain at head %d has %d writable bytes, more than %d", e.Descs[0], e.Writable, MaxChainBytes)
		}
		for _, d := range e.Descs {
			if uint64(d) >= n || q.owned[d] {
				return nil, fmt.Errorf("chain at head %d: descriptor %d out of range or in two chains", e.Descs[0], d)
			}
			q.owned[d] = true
		}
		q.inflight[e.Descs[0]] = InFlight{Descs: slices.Clone(e.Descs), Writable: e.Writable}
	}
	return q, nil
}

// Stateful is a virtio device model whose own state a VM snapshot
// carries beside its transport's (MMIO.Save). SaveState encodes the state
// (msgpack); RestoreState decodes and checks one, refusing a state the
// device cannot be in with the device unchanged, and submits nothing:
// the VM's bounce engine, restored beside it, holds the transfers in
// flight.
type Stateful interface {
	SaveState() ([]byte, error)
	RestoreState([]byte) error
}
