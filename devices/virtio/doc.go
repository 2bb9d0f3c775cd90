// Package virtio is the virtio-mmio transport (virtio 1.x, MMIO version 2)
// and the split virtqueue, as deterministic models a hostile guest cannot
// push into a panic, an out-of-bounds access, a loop or an unbounded
// allocation. Device models (virtio-blk, virtio-net) sit behind it as a
// Backend.
//
// Like the models in package devices, it is a plain state machine driven
// from the vCPU thread: no goroutines, no timers, no clock. Its state is a
// function of the guest's register accesses, the guest memory it reads at
// those accesses, and what the backend does when called.
//
// # What is supported
//
//   - The MMIO register window (see MMIO): all registers are 32 bits wide
//     and only aligned 4-byte accesses reach them; any other access to
//     0x000-0x0ff reads 0 and is ignored. The config space at 0x100-0x1ff
//     takes naturally aligned 1, 2 and 4-byte accesses, which go to the
//     backend; anything else there reads 0 and is ignored. Offsets past
//     0x1ff read 0. Reads have no side effects. Write-only registers read 0.
//   - The status state machine (virtio 1.1, 2.1 and 3.1): writing 0 resets
//     the device (status, features, selectors, interrupt status, every
//     queue, then Backend.Reset). Other writes add bits; the driver cannot
//     clear bits but by a reset, nor set DEVICE_NEEDS_RESET. FEATURES_OK
//     sticks only if the driver's features are a subset of the offered
//     ones and include VIRTIO_F_VERSION_1; otherwise it reads back clear
//     and the driver gives up. DRIVER_OK sticks only with FEATURES_OK.
//     Driver features are frozen once FEATURES_OK is set.
//   - Feature bits: the backend's device-specific bits plus
//     VIRTIO_F_VERSION_1. The transport range, bits 24..40, is otherwise
//     cleared.
//   - Queues: QueueNum and the three ring addresses are writable while the
//     queue is not ready (QueueNum defaults to 0 after a reset: the driver
//     must write it, as the spec says). Writing 1 to QueueReady validates
//     the queue: QueueNum a power of two in 1..QueueNumMax, the descriptor
//     table (16 bytes per entry, 16-aligned), driver area (6+2N bytes,
//     2-aligned) and device area (6+8N bytes, 4-aligned) each inside guest
//     RAM. A queue that fails stays not ready (QueueReady reads 0) and the
//     device enters DEVICE_NEEDS_RESET. Writing 0 to QueueReady disables
//     the queue; chains in flight become stale.
//   - QueueNotify (the queue index; no VIRTIO_F_NOTIFICATION_DATA) calls
//     Backend.Notify while the device is Active; otherwise it is dropped.
//     A driver that posts buffers before DRIVER_OK must notify again after.
//   - Interrupts: bit 0 (used buffer) when Push returns a chain, bit 1
//     (configuration change) on ConfigChanged and on entering
//     DEVICE_NEEDS_RESET. The line is level: high while InterruptStatus is
//     not zero, until the driver acknowledges with InterruptACK. Push
//     honours VIRTQ_AVAIL_F_NO_INTERRUPT (read after publishing the used
//     idx); the used ring's flags are never set, so the driver always
//     notifies.
//
// # What is refused, and why
//
//   - VIRTIO_F_INDIRECT_DESC is not offered, and a descriptor with the
//     INDIRECT flag is a malformed chain: indirect tables are a second
//     walk with its own bounds, and no driver needs them.
//   - VIRTIO_F_EVENT_IDX is not offered: its suppression depends on racy
//     index comparisons that would need care to keep replay exact, and
//     the interrupt count is not a bottleneck here.
//   - VIRTIO_F_RING_PACKED is not offered: split rings only.
//   - No legacy (version 1) interface, so the driver must accept
//     VIRTIO_F_VERSION_1; Linux 4.0 and later do.
//   - No shared memory regions, no queue reset, no notification data.
//
// # Malformed rings
//
// Pop validates what the guest wrote before the backend sees it. Any of
// these breaks the device: it enters DEVICE_NEEDS_RESET (status bit 0x40)
// with a configuration change interrupt (virtio 1.1, 2.1.2; MMIO.Fault
// says why), Pop returns nothing, and Push, Gather and Scatter refuse,
// until the guest resets the device:
//
//   - the avail idx more than the queue size past the next entry to take;
//   - a descriptor index not below the queue size;
//   - a descriptor the device already owns: a loop, or a descriptor shared
//     with a chain in flight (so a chain has at most QueueNum descriptors,
//     and all chains in flight together at most QueueNum);
//   - a buffer not entirely inside guest RAM;
//   - a driver-readable descriptor after a device-writable one;
//   - the INDIRECT flag;
//   - a chain longer than MaxChainBytes in total;
//   - a ring no longer inside guest RAM.
//
// Each descriptor is copied out of guest memory once and validated on the
// copy, since the guest (another vCPU) may change it meanwhile.
//
// # Usage
//
// A VMM gives each device a WindowSize (0x200) window on the MMIO bus and
// an interrupt line, and tells a Linux guest where it is on the kernel
// command line, virtio_mmio.device=<size>@<base>:<irq>, for example
//
//	virtio_mmio.device=512@0xd0000000:5
//
// and wires it:
//
//	mem := virtio.MemoryFunc(vm.GuestRAM) // func(gpa uint64, n int) ([]byte, bool)
//	dev, err := virtio.NewMMIO(backend, mem, func(high bool) { pic.SetIRQ(5, high) })
//	bus.Register(0xd0000000, virtio.WindowSize, dev)
//
// The duties from then on:
//
//  1. Call dev.Read and dev.Write, and every Queue method, on the vCPU
//     thread only; nothing here is safe for concurrent use.
//  2. The interrupt is a level: wire it to a level-triggered input, or an
//     edge-triggered PIC input (an edge per rise; the driver acknowledges
//     everything it saw, so no rise is lost).
//  3. Device-to-guest data that does not come from the guest's own
//     request (a disk read, a received packet) is nondeterministic. The
//     backend fetches it into a bounce buffer off the vCPU thread
//     (package bounce) and copies it in with Queue.Scatter and Queue.Push
//     only at a logged delivery point, so a replayer delivers it at the
//     same point of the guest's execution. The queue helpers themselves
//     are synchronous and deterministic; a backend that serves a request
//     entirely inside Notify (from guest memory and its own state) needs
//     no logging.
//  4. A completion may arrive after the guest reset the device or the
//     queue: check Queue.Valid on the chain (Gather and Scatter do, and
//     return ErrStale) and drop it.
//  5. For snapshots, Save the transport and the backend; Restore both into
//     devices built with the same backend configuration and memory.
//
// A device model whose data moves through bounce buffers is a Device (a
// Backend that also takes its transport and its completions), and its
// package describes it to a VMM with an Attachment: its kind, what a log
// header pins, its bounce backend, whether a replay performs its writes,
// and a constructor taking the VMM's engine slot. vmm.VM.AddVirtio adds
// any such device; Attach and KernelArg are the wiring it shares with
// other VMMs.
//
// Package virtiotest is a guest driver for device tests.
package virtio
